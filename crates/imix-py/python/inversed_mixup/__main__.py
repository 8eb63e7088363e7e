"""``python -m inversed_mixup serve [--port 8080] [--model DIR] [--input FILE] [--rows FILE]``: the
explorer page, as ``imix serve``."""

import argparse
import sys

from . import ImixError, serve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m inversed_mixup", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="the explorer page (drag lambda, sweep a pair, browse rows)")
    s.add_argument("--port", type=int, default=8080, help="port (0: any free one) [8080]")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    s.add_argument("--model", help="a warm-up bundle (imix warmup --out)")
    s.add_argument("--input", help="a labelled file whose sentences the page offers")
    s.add_argument("--rows", help="an imix augment output for the Rows tab")
    for m in ("encoder", "llm", "adaptor"):
        s.add_argument(f"--{m}", help=f"{m} (default: the package's)")
    a = p.parse_args(argv)
    try:
        serve(a.port, a.host, model=a.model, input=a.input, rows=a.rows, encoder=a.encoder, llm=a.llm, adaptor=a.adaptor,
              ready=lambda url: print(f"imix explorer at {url}  (Ctrl-C stops it)", flush=True))
    except ImixError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C stopped the server cleanly; Python saw the signal too
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
