# A minimal HTTP authentication and ACL hook for Tern (README "HTTP authentication hook").
# Users in USERS log in with their password; "dashboard" may read sensors/#, every other user
# its own subtree; the ACL hook allows topics under sensors/. Usage: python3 hook.py [PORT]
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USERS = {"dashboard": "d4shb0ard", "sensor-9": "s3cret"}


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/mqtt/auth":
            if USERS.get(req["username"]) != req["password"]:
                answer = {"result": "deny"}
            elif req["username"] == "dashboard":
                answer = {"result": "allow", "subscribe": ["sensors/#"], "publish": []}
            else:
                answer = {"result": "allow", "publish": ["sensors/%u/#"], "subscribe": []}
        else:  # /mqtt/acl: {"clientid", "username", "action", "topic"}
            ok = req["topic"].startswith("sensors/")
            answer = {"result": "allow" if ok else "deny"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
ThreadingHTTPServer(("127.0.0.1", port), Hook).serve_forever()
