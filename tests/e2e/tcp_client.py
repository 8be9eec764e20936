#!/usr/bin/env python3
"""Raw TCP clients for the e2e tests: behaviours curl cannot produce.

  tcp_client.py stall HOST PORT PATH SECONDS
      Sends one GET with a tiny receive buffer and never reads the answer;
      holds the socket open for SECONDS, then prints how many bytes the
      kernel had buffered and whether the server reset the connection.
  tcp_client.py slow-head HOST PORT SECONDS
      Sends an unfinished request head and waits up to SECONDS for the
      server to close; prints "closed after N.N s" or "still open".
  tcp_client.py keepalive HOST PORT PATH GO_FILE SECONDS
      POSTs PATH twice on one keep-alive connection; before the second
      request waits (up to SECONDS) for GO_FILE to exist. Prints both
      status codes, e.g. "200 403".
"""
import http.client
import os
import socket
import sys
import time


def stall(host, port, path, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connect, so the window advertised in the SYN is small too.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.settimeout(10)
    s.connect((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    time.sleep(seconds)
    # Now look: a reset connection raises on read, a live one has data.
    s.setblocking(False)
    got, reset = 0, False
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
    except BlockingIOError:
        pass
    except ConnectionResetError:
        reset = True
    print(f"buffered={got} reset={reset}")


def slow_head(host, port, seconds):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaa")
    s.settimeout(seconds)
    t0 = time.monotonic()
    try:
        while True:
            # Keep the head growing slowly, as a slowloris would.
            b = s.recv(4096)
            if not b:
                break
    except socket.timeout:
        print("still open")
        return
    except ConnectionResetError:
        pass
    print(f"closed after {time.monotonic() - t0:.1f} s")


def keepalive(host, port, path, go_file, seconds):
    c = http.client.HTTPConnection(host, port, timeout=10)
    codes, ports = [], []
    for i in range(2):
        if i == 1:
            deadline = time.monotonic() + seconds
            while not os.path.exists(go_file) and time.monotonic() < deadline:
                time.sleep(0.1)
        c.request("POST", path, body=b"", headers={"Content-Length": "0"})
        r = c.getresponse()
        ports.append(c.sock.getsockname()[1] if c.sock else None)
        r.read()
        codes.append(str(r.status))
    # http.client reconnects silently when the server closed the
    # connection: the local port tells whether one connection served both.
    same = ports[0] is not None and ports[0] == ports[1]
    print(" ".join(codes), "same-connection" if same else "reconnected")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "stall" and len(argv) == 6:
        stall(argv[2], int(argv[3]), argv[4], float(argv[5]))
    elif cmd == "slow-head" and len(argv) == 5:
        slow_head(argv[2], int(argv[3]), float(argv[4]))
    elif cmd == "keepalive" and len(argv) == 7:
        keepalive(argv[2], int(argv[3]), argv[4], argv[5], float(argv[6]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
