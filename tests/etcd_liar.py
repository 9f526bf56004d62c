#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# etcd_liar.py SOCKET PORT RULES - an etcd v3 JSON gateway that lies, for
# tests/test_arbiter.c: it listens on the Unix socket SOCKET, forwards each
# POST to the real etcd at 127.0.0.1:PORT, and applies to it the first rule
# of the JSON list in the file RULES (read at each request) that matches
# its path and is not spent:
#
#   {"path": "/v3/kv/txn", "count": 1, "action": "delay_answer", "ms": 1500}
#       forwards at once (etcd applies the request), answers ms later
#   {"path": "/v3/lease/grant", "action": "set", "field": "TTL", "value": "1"}
#       forwards, and answers with that field (a.b for a nested one) changed
#   {"path": "/v3/kv/txn", "action": "delay_forward", "ms": 1500}
#       holds the request ms, then forwards it (etcd applies it late, after
#       whatever the client sent meanwhile) and answers
#   {"path": "/v3/lease/revoke", "action": "hang", "ms": 1000}
#       holds the request ms and closes the connection: never forwarded,
#       never answered
#
# "count", if given, is how many requests the rule applies to (it is
# counted down in the file); "after": N, that the rule applies only once
# rule N (its index in the list) is spent.  Each rule applied is logged on
# stderr.
import http.client
import json
import os
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

SOCK, PORT, RULES = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def take_rule(path):
    with lock:
        try:
            with open(RULES) as f:
                rules = json.load(f)
        except (OSError, ValueError):
            return None
        for r in rules:
            if r.get("path", path) != path or r.get("count", 1) <= 0:
                continue
            if "after" in r and rules[r["after"]].get("count", 1) > 0:
                continue
            if "count" in r:
                r["count"] -= 1
                with open(RULES + ".tmp", "w") as f:
                    json.dump(rules, f)
                os.rename(RULES + ".tmp", RULES)
            return r
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        req = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        rule = take_rule(self.path)
        if rule:
            print("etcd_liar: %s %s" % (self.path, json.dumps(rule)),
                  file=sys.stderr, flush=True)
        if rule and rule.get("action") == "hang":
            time.sleep(rule["ms"] / 1000.0)
            return
        if rule and rule.get("action") == "delay_forward":
            time.sleep(rule["ms"] / 1000.0)
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        c.request("POST", self.path, body=req,
                  headers={"Content-Type": "application/json"})
        resp = c.getresponse()
        code, body = resp.status, resp.read()
        c.close()
        if rule and rule.get("action") == "delay_answer":
            time.sleep(rule["ms"] / 1000.0)
        elif rule and rule.get("action") == "set":
            answer = json.loads(body)
            o = answer
            keys = rule["field"].split(".")
            for k in keys[:-1]:
                o = o.setdefault(k, {})
            o[keys[-1]] = rule["value"]
            body = json.dumps(answer).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass    # the client gave up waiting


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if os.path.exists(SOCK):
    os.unlink(SOCK)
server = Server(SOCK, Handler)
os.chmod(SOCK, 0o666)
server.serve_forever()
