"""What every benchmark does last: print its JSON result and, with --out, write it to a file."""

import json


def emit(result: dict, out_path: str | None) -> None:
    text = json.dumps(result, indent=1)
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
