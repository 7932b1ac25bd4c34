"""`python -m tests.fleet.env_probe OUT`: writes the names in its environment to OUT (JSON), so a
test can see what a child process was given."""

import json
import os
import sys

if __name__ == "__main__":
    with open(sys.argv[1], "w") as handle:
        json.dump(sorted(os.environ), handle)
