#!/usr/bin/env python3
"""jsonq.py — the JSON assertions of the end-to-end tests, one subcommand each.

Exit status 0 means the assertion holds; 1 means it does not, with a line on
stderr saying what was found; 2 means the file is not JSON at all.

  status-success FILE     the Prometheus API envelope says "success"
  up-is-one FILE          a query answer with samples, every one of value "1"
  has-result FILE         a query answer with at least one sample
  get FILE KEY[.KEY...]   print a value (keys are dict keys or list indices)
  json-lines FILE         every non-empty line is a JSON document (a JSON log)
  eval FILE EXPR          a Python expression over the document `d` is true
"""
import json
import sys


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: not JSON ({e})", code=2)


def fail(message, code=1):
    print(f"        {message}", file=sys.stderr)
    sys.exit(code)


def shown(d):
    return json.dumps(d)[:300]


def samples(d):
    try:
        return d["data"]["result"]
    except (KeyError, TypeError):
        fail(f"no data.result in {shown(d)}")


def main(argv):
    if len(argv) < 2:
        fail(__doc__, code=2)
    cmd, path, args = argv[0], argv[1], argv[2:]
    if cmd == "json-lines":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError:
                        fail(f"{path}:{n} is not JSON: {line[:200]!r}")
        return
    d = load(path)
    if cmd == "status-success":
        if not (isinstance(d, dict) and d.get("status") == "success"):
            fail(f"status is not success: {shown(d)}")
    elif cmd == "up-is-one":
        r = samples(d)
        if not (r and all(s["value"][1] == "1" for s in r)):
            fail(f"want samples of value 1: {shown(r)}")
    elif cmd == "has-result":
        if not samples(d):
            fail(f"no samples: {shown(d)}")
    elif cmd == "get":
        for key in args[0].split("."):
            try:
                d = d[int(key)] if isinstance(d, list) else d[key]
            except (KeyError, IndexError, ValueError, TypeError):
                fail(f"no {args[0]} in the document")
        print(d if isinstance(d, str) else json.dumps(d))
    elif cmd == "eval":
        try:
            ok = eval(args[0], {}, {"d": d})
        except Exception as e:  # a missing key means the answer is not as expected
            fail(f"{type(e).__name__} {e} evaluating {args[0]} over {shown(d)}")
        if not ok:
            fail(f"false: {args[0]} over {shown(d)}")
    else:
        fail(f"unknown subcommand {cmd}\n{__doc__}", code=2)


if __name__ == "__main__":
    main(sys.argv[1:])
