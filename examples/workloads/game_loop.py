"""A game-style fixed-timestep frame loop: input, physics, collisions, render; sleeps to the next frame."""
import math
import random
import time


class Entity:
    __slots__ = ("x", "y", "vx", "vy", "hp", "kind")

    def __init__(self, rng, kind):
        self.x, self.y = rng.uniform(0, 640), rng.uniform(0, 480)
        self.vx, self.vy = rng.uniform(-60, 60), rng.uniform(-60, 60)
        self.hp = 100
        self.kind = kind


def _update(entities, dt):
    for e in entities:
        e.x = (e.x + e.vx * dt) % 640
        e.y = (e.y + e.vy * dt) % 480


def _collisions(entities, cell=32):
    grid = {}
    for e in entities:
        grid.setdefault((int(e.x) // cell, int(e.y) // cell), []).append(e)
    hits = []
    for bucket in grid.values():
        for i in range(len(bucket)):
            for j in range(i + 1, len(bucket)):
                a, b = bucket[i], bucket[j]
                if math.hypot(a.x - b.x, a.y - b.y) < 8:
                    hits.append((a, b))
    return hits


def _render(entities, hits):
    # A draw list, as a renderer backend would receive it.
    commands = [("sprite", e.kind, round(e.x), round(e.y)) for e in entities]
    commands.extend(("spark", round((a.x + b.x) / 2), round((a.y + b.y) / 2)) for a, b in hits)
    return len(commands)


def run(duration_s=1.0, fps=60, entities=300, seed=2):
    """Runs frames at ``fps`` for ``duration_s``; each frame spawns/despawns a few entities."""
    rng = random.Random(seed)
    world = [Entity(rng, rng.choice("abc")) for _ in range(entities)]
    frame_s = 1.0 / fps
    start = next_frame = time.monotonic()
    frames = drawn = 0
    while next_frame - start < duration_s:
        _update(world, frame_s)
        hits = _collisions(world)
        for a, _ in hits[:3]:
            a.hp -= 10
        world = [e for e in world if e.hp > 0]
        world.extend(Entity(rng, rng.choice("abc")) for _ in range(entities - len(world)))
        drawn += _render(world, hits)
        frames += 1
        next_frame += frame_s
        delay = next_frame - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return {"frames": frames, "draw_commands": drawn}


if __name__ == "__main__":
    print(run(2.0))
