"""Server time of every `lorakit ui` page on a 200-image project (issue: at most 200 ms).

    .venv/bin/python bench/ui_pages.py [--images 200] [--repeat 5]

Draws the photos, creates the project through the app, waits for its background lint and
thumbnails, preps it, then requests each page `--repeat` times in-process (no network, no
browser: the time is the server's) and prints the median and worst per page.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from lorakit.ui.app import create_app

PAGES = ("/", "/p/1/dataset", "/p/1/captions", "/p/1/train", "/jobs", "/p/1/results")


def draw(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (384, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{i:03d}.png")
        (folder / f"photo_{i:03d}.txt").write_text(f"sks, person, photo {i}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        draw(root / "photos", args.images)
        app = create_app([root], root / ".ui", start_worker=False)
        with TestClient(app, base_url="http://127.0.0.1") as client:
            token = client.get("/").text.split('csrf-token" content="', 1)[1].split('"')[0]
            headers = {"X-CSRF-Token": token}
            client.post("/projects", data={"folder": str(root / "photos")}, headers=headers)
            started = time.monotonic()
            while 1 in app.state.ui.linting:
                time.sleep(0.2)
            print(f"lint + thumbnails of {args.images} images: {time.monotonic() - started:.1f} s")
            prep = {"trigger": "sks", "class_name": "person", "repeats": "2"}
            client.post("/p/1/prep", data=prep, headers=headers)
            for page in PAGES:
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    assert client.get(page).status_code == 200, page
                    times.append(1000 * (time.perf_counter() - t0))
                median, worst = statistics.median(times), max(times)
                print(f"{page:<16} median {median:6.1f} ms  worst {worst:6.1f} ms")


if __name__ == "__main__":
    main()
