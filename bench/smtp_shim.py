"""CPU of the mailer's relay sending messages to an SMTP sink in another process, with the
aiosmtplib shim (services/mailer/prepared_smtp.py) and with aiosmtplib's own `sendmail` on the
same pooled connections.

    .venv/bin/python bench/smtp_shim.py [--messages 325] [--rounds 3] [--pdfs 0,1,10]

The messages are the mailer's own (services.mailer.message.build_message) with 0, 1 or 10
attached 60 KB PDFs; the sink is aiosmtpd's Sink handler. Prints the client's CPU seconds
(median, min, max over the rounds, after one untimed round) per case; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.mailer.message import OutgoingMessage, build_message  # noqa: E402
from services.mailer.relay import RelayPool  # noqa: E402
from services.mailer.settings import MailerSettings  # noqa: E402

PDF = os.urandom(60_000)


class StockRelayPool(RelayPool):
    """The same pool, sending with aiosmtplib's own `sendmail` (both regex passes)."""

    async def send(self, msg: OutgoingMessage) -> None:
        async with self.connection() as smtp:
            await smtp.sendmail(msg.mail_from, msg.recipients, msg.data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(i: int, pdfs: int) -> OutgoingMessage:
    content = {
        "to": [f"client{i}@example.test"],
        "cc": [],
        "from_name": "Hartwell & Moreno LLP",
        "reply_to": "billing@hartwell.test",
        "subject": f"Invoice {i}",
        "html": "<p>Pay at <a href='https://pay.test/pay/tok'>Pay Online</a></p>" * 20,
        "text": "Pay at https://pay.test/pay/tok\n" * 20,
        "attachments": [
            {
                "filename": f"inv-{i}-{k}.pdf",
                "content_type": "application/pdf",
                "content_b64": base64.b64encode(PDF).decode(),
            }
            for k in range(pdfs)
        ],
    }
    return build_message(content, mail_from="billing@envelopepay.test", message_id=f"<{i}@x>")


async def measure(
    pool_class: type[RelayPool], port: int, pdfs: int, n: int, rounds: int
) -> list[float]:
    pool = pool_class(MailerSettings(smtp_port=port), size=16)
    cpu: list[float] = []
    try:
        for r in range(rounds + 1):
            msgs = [message(i, pdfs) for i in range(n)]
            started = time.process_time()
            await asyncio.gather(*(pool.send(m) for m in msgs))
            if r:  # the first round warms the pool's connections
                cpu.append(time.process_time() - started)
    finally:
        await pool.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=325)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pdfs", default="0,1,10")
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"]
        + ["-c", "aiosmtpd.handlers.Sink"]
    )
    try:
        time.sleep(1.5)
        print(f"client CPU seconds for {args.messages} messages, {args.rounds} rounds")
        for pdfs in (int(x) for x in args.pdfs.split(",")):
            for name, cls in (("shim", RelayPool), ("aiosmtplib", StockRelayPool)):
                cpu = asyncio.run(measure(cls, port, pdfs, args.messages, args.rounds))
                print(
                    f"  {pdfs:2d} PDFs  {name:10s}  median {median(cpu):.3f}"
                    f"  min {min(cpu):.3f}  max {max(cpu):.3f}"
                )
    finally:
        sink.terminate()


if __name__ == "__main__":
    main()
