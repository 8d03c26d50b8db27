"""A private SMTP server for postdesk's integration tests (driven by tests/it/smtp.rs).

Run with Debian's /usr/bin/python3 (package python3-aiosmtpd; the pyenv `python3` on the
PATH does not see Debian's Python packages):

    /usr/bin/python3 smtp_server.py --port PORT --out-dir DIR
        [--cert PEM --key PEM]            # STARTTLS offered, and required before MAIL FROM
        [--user LOGIN --password SECRET]  # AUTH PLAIN/LOGIN required (over TLS when TLS is on)
        [--submit-port PORT]              # a second, plain listener without TLS nor AUTH
        [--deliver-cmd JSON --local-domain DOMAIN]
        [--watch-stdin]                   # exit when stdin reaches end of file

Each accepted message is written to DIR/NNNNNN.eml (bytes as received after dot-unstuffing,
CRLF line ends), its envelope to DIR/NNNNNN.env ("MAIL FROM:<a>" then one "RCPT TO:<b>" line
per recipient), both atomically (temporary name, then rename; the .eml last, so a visible
.eml always has its .env). Numbering continues after a restart.

--deliver-cmd is a JSON list of strings, e.g.
["/usr/bin/doveadm", "-c", "/tmp/pd-dove-x/dovecot.conf", "save", "-u"]: it is run once per
recipient whose domain is --local-domain, with the address appended as the last argument and
the message on stdin, before the message is stored. If it fails, DATA is answered
`451 4.3.0 local delivery failed` and nothing is stored (recipients delivered to before the
failure keep their copy).

DIR/mode holds `accept` (also when missing), `tempfail` (451 to RCPT and DATA), `permfail`
(550 to RCPT and DATA) or `hold` (DATA waits, logging "DATA held", until the mode is another);
it is read at every RCPT and DATA, so tests switch modes at runtime.

Prints `READY <port>` on stdout once every listener is bound; exits 0 on SIGTERM, and with
--watch-stdin also when stdin reaches end of file: the test process holds the other end of
that pipe, so the server does not outlive a test binary that dies without cleaning up.
"""

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import ssl
import sys

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError as e:
    sys.stderr.write(
        f"smtp_server.py: cannot import aiosmtpd ({e}) with {sys.executable}; "
        "install the Debian package python3-aiosmtpd and run this with /usr/bin/python3\n"
    )
    sys.exit(3)

log = logging.getLogger("smtp_server")

TEMPFAIL = "451 4.3.0 try again later"
PERMFAIL = "550 5.1.1 mailbox unavailable"
MODES = {"accept": None, "tempfail": TEMPFAIL, "permfail": PERMFAIL, "hold": None}


class Handler:
    def __init__(self, out_dir, deliver_cmd, local_domain, offer_auth):
        self.out_dir = out_dir
        self.offer_auth = offer_auth
        self.deliver_cmd = deliver_cmd
        self.local_domain = local_domain.lower() if local_domain else None
        numbers = [
            int(m.group(1))
            for m in (re.fullmatch(r"(\d{6})\.eml", n) for n in os.listdir(out_dir))
            if m
        ]
        self.next_number = max(numbers, default=0) + 1

    def mode(self):
        try:
            with open(os.path.join(self.out_dir, "mode"), encoding="ascii") as f:
                return f.read().strip()
        except FileNotFoundError:
            return "accept"

    def refusal(self):
        """The reply the current mode prescribes instead of accepting, or None."""
        mode = self.mode()
        if mode not in MODES:
            log.error("unknown mode %r in the mode file", mode)
            return f"451 4.3.0 test server: unknown mode {mode!r}"
        return MODES[mode]

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # With a hook, setting host_name is the hook's job.
        session.host_name = hostname
        if self.offer_auth:
            return responses
        # Without --user aiosmtpd still offers AUTH after STARTTLS (and lets it always fail):
        # a server without AUTH should not advertise it.
        return [r for r in responses if not r.startswith("250-AUTH")]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self.refusal()
        if refusal:
            log.info("RCPT TO:<%s> refused: %s", address, refusal)
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode() == "hold":
            log.info("DATA held")
            while self.mode() == "hold":
                await asyncio.sleep(0.02)
        refusal = self.refusal()
        if refusal:
            log.info("DATA refused: %s", refusal)
            return refusal
        content = envelope.content
        if self.deliver_cmd and self.local_domain:
            for rcpt in envelope.rcpt_tos:
                if rcpt.rpartition("@")[2].lower() != self.local_domain:
                    continue
                error = await self.deliver(rcpt, content)
                if error:
                    log.error("delivery to %s failed: %s", rcpt, error)
                    return "451 4.3.0 local delivery failed"
        number = self.next_number
        self.next_number += 1
        lines = [f"MAIL FROM:<{envelope.mail_from}>"]
        lines += [f"RCPT TO:<{rcpt}>" for rcpt in envelope.rcpt_tos]
        self.store(f"{number:06}.env", ("\n".join(lines) + "\n").encode())
        self.store(f"{number:06}.eml", content)
        log.info("stored message %06d for %s", number, envelope.rcpt_tos)
        return "250 2.0.0 OK"

    async def deliver(self, rcpt, content):
        proc = await asyncio.create_subprocess_exec(
            *self.deliver_cmd,
            rcpt,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate(content)
        if proc.returncode != 0:
            return f"{self.deliver_cmd + [rcpt]} exited with {proc.returncode}: {output!r}"
        return None

    def store(self, name, data):
        tmp = os.path.join(self.out_dir, f".tmp-{name}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
        os.rename(tmp, os.path.join(self.out_dir, name))


def authenticator(login, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == login
            and auth_data.password == password
        )
        # handled=False: otherwise aiosmtpd sends no reply at all to a failed AUTH (the
        # default, handled=True, means "the authenticator already replied").
        return AuthResult(success=ok, handled=False)

    return check


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--submit-port", type=int)
    p.add_argument("--deliver-cmd", type=json.loads)
    p.add_argument("--local-domain")
    p.add_argument("--watch-stdin", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    args = p.parse_args()
    if bool(args.cert) != bool(args.key):
        p.error("--cert and --key go together")
    if args.implicit_tls and not args.cert:
        p.error("--implicit-tls needs --cert and --key")
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if bool(args.deliver_cmd) != bool(args.local_domain):
        p.error("--deliver-cmd and --local-domain go together")

    tls_context = None
    if args.cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.cert, args.key)

    handler = Handler(
        args.out_dir, args.deliver_cmd, args.local_domain, offer_auth=args.user is not None
    )
    loop = asyncio.get_running_loop()

    # Implicit TLS: the listener itself speaks TLS, and SMTP offers no STARTTLS.
    starttls_context = None if args.implicit_tls else tls_context

    def main_protocol():
        kwargs = {}
        if args.user is not None:
            kwargs.update(
                authenticator=authenticator(args.user.encode(), args.password.encode()),
                auth_required=True,
                # Without STARTTLS there is nothing to require: plaintext AUTH (loopback
                # only), or AUTH inside implicit TLS.
                auth_require_tls=starttls_context is not None,
            )
        return SMTP(
            handler,
            # An explicit name: the default, socket.getfqdn(), may wait for DNS.
            hostname="localhost",
            tls_context=starttls_context,
            require_starttls=starttls_context is not None,
            **kwargs,
        )

    listener_ssl = tls_context if args.implicit_tls else None
    servers = [await loop.create_server(main_protocol, "127.0.0.1", args.port, ssl=listener_ssl)]
    if args.submit_port:
        servers.append(
            await loop.create_server(
                lambda: SMTP(handler, hostname="localhost"), "127.0.0.1", args.submit_port
            )
        )

    stop = loop.create_future()

    def stop_now():
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_now)
    if args.watch_stdin:
        # In the event loop, not in a thread: a daemon thread blocked reading sys.stdin
        # makes the interpreter abort at exit ("could not acquire lock ... <stdin>").
        def on_stdin():
            if not os.read(0, 4096):
                loop.remove_reader(0)
                log.info("stdin closed: stopping")
                stop_now()

        loop.add_reader(0, on_stdin)
    print(f"READY {args.port}", flush=True)
    await stop
    for server in servers:
        server.close()
    for server in servers:
        await server.wait_closed()
    log.info("stopped")


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        asyncio.run(main())
    except OSError as e:
        # e.g. "[Errno 98] ... address already in use": one line the Rust side can match.
        sys.stderr.write(f"smtp_server.py: {e}\n")
        sys.exit(2)
