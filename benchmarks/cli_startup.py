"""How long `rlkube --help` and other non-training commands take to start, and that none import TensorFlow.

    python benchmarks/cli_startup.py
"""

import json
import statistics
import subprocess
import sys
import time

COMMANDS = [["--help"], ["train", "--help"], ["clusters"], ["submit", "--help"]]
REPEATS = 7


def main() -> None:
    results = {}
    for args in COMMANDS:
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "rlkube", *args], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "rlkube", *args], check=True,
                                 capture_output=True, text=True).stderr
        results["rlkube " + " ".join(args)] = {"median_s": round(statistics.median(times), 3),
                                               "imports_tensorflow": "tensorflow" in imports}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
