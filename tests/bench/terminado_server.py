"""terminado, Jupyter's terminal backend, as a peer for zpanel-bench.

Serves `terminado.TermSocket` at ws://127.0.0.1:PORT/websocket: every WebSocket gets its own
`bash` in a pseudo-terminal (UniqueTermManager). Its protocol is JSON arrays:
["stdin", "keys"] and ["set_size", rows, cols] in, ["setup", {}] then ["stdout", "text"] out.

Usage: python terminado_server.py PORT
Prints one line with the versions once it listens; runs until killed.
"""

import sys

import terminado
import tornado
import tornado.ioloop
import tornado.web


def main() -> None:
    port = int(sys.argv[1])
    manager = terminado.UniqueTermManager(shell_command=["bash"])
    app = tornado.web.Application(
        [(r"/websocket", terminado.TermSocket, {"term_manager": manager})]
    )
    app.listen(port, address="127.0.0.1")
    print(f"terminado {terminado.__version__}, tornado {tornado.version}", flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
