"""A program that allocates steadily at known sites until SECONDS pass (default 60), for `top`.

    steady_loop.py [SECONDS]

``build_frames`` makes large buffers, a bounded number of which stay live; ``tokenize_text``
makes many small strings. Prints one line when it ends.
"""
import sys
import time


def build_frames(n):
    return [bytearray(16384) for _ in range(n)]


def tokenize_text(text):
    return [token.upper() for token in text.split()]


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    deadline = time.monotonic() + seconds
    kept, rounds = [], 0
    while time.monotonic() < deadline:
        kept.append(build_frames(1 + rounds % 4))
        if len(kept) > 40:
            kept.pop(0)
        tokenize_text("alpha beta gamma delta " * (10 + rounds % 20))
        rounds += 1
        time.sleep(0.003)
    print(f"steady_loop: {rounds} rounds", flush=True)


if __name__ == "__main__":
    main()
