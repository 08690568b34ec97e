"""`lorakit ui`: a local web app over the stage packages (FastAPI, Jinja2, htmx).

It holds no dataset, caption or training logic: pages call the stage functions the CLI
calls, and heavy steps run as `lorakit …` commands in a worker process with a persistent
SQLite queue, so a run survives a closed browser and a killed worker is never lost.
"""
