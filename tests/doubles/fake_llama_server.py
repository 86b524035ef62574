"""A stand-in for llama.cpp's llama-server, for the benchmark's launching logic: it answers
GET /health 503 ("loading") for its first 0.3 s, then 200, and streams POST /completion as
llama-server does (one `data:` event per token, the last marked `stop`).

    python tests/doubles/fake_llama_server.py -m MODEL --host HOST --port PORT [ANY ...]

It writes the arguments it was given, as JSON, to the file named by $FAKE_LLAMA_ARGV.
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the stream ends when the connection closes

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        ready = time.monotonic() - STARTED > 0.3
        body = json.dumps({"status": "ok"} if ready else {"error": {"message": "Loading model"}}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(request["n_predict"]):
            self.wfile.write(f"data: {json.dumps({'content': f'w{i}', 'stop': False})}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.002)
        self.wfile.write(f"data: {json.dumps({'content': '', 'stop': True})}\n\n".encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_known_args()[0]  # the rest are llama-server's own flags
    with open(os.environ["FAKE_LLAMA_ARGV"], "w") as out:
        json.dump(sys.argv[1:], out)
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
