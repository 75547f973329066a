"""``python -m auggen.pipeline`` (bootstrap: reports what is built so far)."""

import auggen.ops

if __name__ == "__main__":
    print("auggen ops backends available:", auggen.ops.backends())
    print("The pipeline stages are not built yet (issue 5).")
