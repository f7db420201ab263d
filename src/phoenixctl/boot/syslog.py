"""The rsyslog words that ship a server's output: an RFC 5424 message whose structured data
names the server (`[phoenix@32473 env= role= server= release=]`), sent over TCP with
octet-counted framing. Cloud servers use them in their user-data (the cloud-init `rsyslog`
module), the project's own aggregator to pass lines on to an aggregator of yours (`ship_to`):
one text, so both send exactly the same records. Pure text, no I/O."""

from __future__ import annotations

SD_ID = "phoenix@32473"  # the structured data's id (an enterprise number as RFC 5424 asks; 32473 is the documentation one)
SD_FIELDS = ("env", "role", "server", "release")  # the local variables ($.env, ...) a ruleset sets before forwarding
TEMPLATE = "phoenix_rfc5424"


def rfc5424_template() -> str:
    """`<PRI>1 TIME HOST phoenix - - [phoenix@32473 env="" role="" server="" release=""] MSG`, from
    the local variables `$.env` ... (values are names and ids: nothing to escape in them)."""
    sd = "\n".join(
        f'  constant(value="{" " if index else ""}{field}=\\"") property(name="$.{field}") constant(value="\\"")'
        for index, field in enumerate(SD_FIELDS)
    )
    return (
        f'template(name="{TEMPLATE}" type="list") {{\n'
        '  constant(value="<") property(name="pri") constant(value=">1 ")\n'
        '  property(name="timereported" dateFormat="rfc3339") constant(value=" ")\n'
        '  property(name="hostname") constant(value=" phoenix - - [' + SD_ID + ' ")\n'
        f"{sd}\n"
        '  constant(value="] ") property(name="msg" droplastlf="on")\n'
        "}\n"
    )


def forward_action(host: str, port: int, queue: str) -> str:
    """An omfwd action to HOST:PORT: RFC 5424 octet-counted over TCP, retried for ever, queued
    in memory and saved to disk when rsyslog stops (nothing dropped while the receiver is down)."""
    return (
        f'action(type="omfwd" target="{host}" port="{port}" protocol="tcp" TCP_Framing="octet-counted" '
        f'template="{TEMPLATE}" action.resumeRetryCount="-1" action.resumeInterval="1" '
        f'queue.type="LinkedList" queue.filename="{queue}" queue.saveOnShutdown="on")'
    )


def cloud_forwarding(env: str, role: str, host: str, port: int) -> str:
    """rsyslog configuration for a cloud server of env/role: its service's output (the systemd
    unit's syslog identifier is `SERVER@RELEASE`, see the provider's start part) forwarded
    with the server's names. The text is the same for every server of the role (it is part
    of the fingerprint); each server's id and release arrive with its identifier."""
    return (
        "# Phoenix: the server's output to the aggregator (RFC 5424, octet-counted framing)\n"
        + rfc5424_template()
        + f"if re_match($programname, '^{role}-[0-9a-f]+@') then {{\n"
        f'  set $.env = "{env}";\n  set $.role = "{role}";\n'
        "  set $.server = field($programname, 64, 1);\n  set $.release = field($programname, 64, 2);\n"
        f"  {forward_action(host, port, 'phoenix_forward')}\n"
        "  stop\n}\n"
    )
