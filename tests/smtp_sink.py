"""An SMTP sink for the tests: delivers every message into the Maildir given as the first
argument. It binds a free loopback port itself and prints it on the first line of its
output, so no port is picked before it is bound."""

import asyncio
import socket
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


async def main(maildir: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    handler = Mailbox(maildir)
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler), sock=sock)
    print(sock.getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main(sys.argv[1]))
