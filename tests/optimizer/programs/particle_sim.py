"""A 30 fps particle sandbox: emitters spawn particles, gravity and bounces, a text-mode frame buffer."""
import random
import time


def run(duration_s=1.0, fps=30, seed=5):
    rng = random.Random(seed)
    particles = []  # dicts: the style of a quick prototype, unlike the demo's slotted classes
    frame_s = 1.0 / fps
    start = deadline = time.monotonic()
    frames = 0
    while deadline - start < duration_s:
        for ex in (10, 40, 70):
            particles.extend({"x": float(ex), "y": 0.0, "vx": rng.uniform(-1, 1), "vy": rng.uniform(0, 2),
                              "life": rng.randint(20, 60)} for _ in range(15))
        alive = []
        for p in particles:
            p["vy"] += 0.3
            p["x"] += p["vx"]
            p["y"] += p["vy"]
            if p["y"] > 40:
                p["y"], p["vy"] = 40.0, -p["vy"] * 0.6
            p["life"] -= 1
            if p["life"] > 0:
                alive.append(p)
        particles = alive
        screen = [[" "] * 80 for _ in range(41)]
        for p in particles:
            screen[int(p["y"])][int(p["x"]) % 80] = "*"
        frame = "\n".join("".join(row) for row in screen)
        frames += bool(frame)
        deadline += frame_s
        delay = deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return {"frames": frames, "particles": len(particles)}
