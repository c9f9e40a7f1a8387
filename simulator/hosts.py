"""Node hosts and the host commands their privileged pods may run.

A real AKS node is reached from a privileged pod with ``hostPID: true`` that runs
``nsenter --target 1 --mount --uts --ipc --net --pid -- <command>``. The simulated kubelet runs such
pods by interpreting a small, documented set of host commands against the node's ``Host`` state:

==========================================================  =========================================
command                                                      effect
==========================================================  =========================================
``test -f /var/run/reboot-required`` (or ``[ -f ... ]``)    exit 0 when the sentinel exists, else 1
``cat /var/run/reboot-required``                            the sentinel text, or exit 1
``cat /var/run/reboot-required.pkgs``                       packages that asked for the reboot
``uname -r``                                                 the running kernel
``cat /proc/sys/kernel/random/boot_id``                     the boot id
``cat /etc/os-release``                                      NAME / VERSION / PRETTY_NAME lines
``hostname``                                                 the node name
``apt list --upgradable`` (``apt-get -s upgrade``)          one line per upgradable package
``apt-get update``                                           refreshes lists (no state change)
``apt-get upgrade -y`` / ``dist-upgrade`` /
``unattended-upgrade``                                       installs updates: a kernel update becomes
                                                             the pending kernel and sets the sentinel
``systemctl reboot`` / ``reboot`` / ``shutdown -r now``     reboots the node
``echo``, ``true``, ``false``, ``exit N``, ``sleep N``      as in a shell
==========================================================  =========================================

Commands may be joined with ``;``, ``&&``, ``||`` and newlines, and run through ``sh -c``. Redirections
to ``/dev/null`` are accepted and ignored; a pipeline (``|``) exits 2. Anything else exits 127 with
``sh: 1: X: not found``.
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass, field

SENTINEL = "/var/run/reboot-required"


@dataclass
class Host:
    node_name: str
    pool: str
    running_kernel: str
    os_image: str
    boot_seconds: float
    os_type: str = "Linux"  # a Windows host never asks for a reboot: a node image upgrade patches it
    reboot_required: bool = False
    pending_kernel: str | None = None
    upgradable_packages: int = 0
    available_kernel: str | None = None
    fail_after_reboot: bool = False
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "up"  # up | booting | down
    boots: int = 0

    @property
    def windows(self) -> bool:
        return self.os_type == "Windows"

    def snapshot(self) -> dict:
        return {
            "node": self.node_name,
            "pool": self.pool,
            "os_type": self.os_type,
            "state": self.state,
            "running_kernel": self.running_kernel,
            "pending_kernel": self.pending_kernel,
            "reboot_required": self.reboot_required,
            "upgradable_packages": self.upgradable_packages,
            "available_kernel": self.available_kernel,
            "boot_id": self.boot_id,
            "boots": self.boots,
            "fail_after_reboot": self.fail_after_reboot,
        }


@dataclass
class CommandResult:
    exit_code: int
    output: str
    reboot: bool = False  # the command asked the host to reboot
    seconds: float = 0.0  # simulated time the command takes


_OPERATORS = re.compile(r"(&&|\|\||;|\n)")


def split_host_command(argv: list[str]) -> list[str] | None:
    """Return the host command of an ``nsenter ... -- cmd`` argv, or None if argv is not an nsenter call."""
    if not argv or argv[0].rsplit("/", 1)[-1] != "nsenter":
        return None
    if "--" in argv:
        return argv[argv.index("--") + 1 :]
    # nsenter without "--": the first argument that is not an option or an option value
    rest = argv[1:]
    takes_value = {"-t", "--target", "-S", "--setuid", "-G", "--setgid", "-w", "--wd", "-r", "--root"}
    i = 0
    while i < len(rest) and rest[i].startswith("-"):
        i += 2 if rest[i] in takes_value else 1
    return rest[i:]


def run_host_command(host: Host, command: list[str]) -> CommandResult:
    """Run a host command (already stripped of nsenter) against the host state."""
    if len(command) >= 3 and command[0].rsplit("/", 1)[-1] in ("sh", "bash") and command[1] == "-c":
        return _run_script(host, command[2])
    return _run_script(host, shlex.join(command))


def _run_script(host: Host, script: str) -> CommandResult:
    output: list[str] = []
    code = 0
    seconds = 0.0
    operator = ";"
    for part in _OPERATORS.split(script):
        if part in ("&&", "||", ";", "\n"):
            operator = part
            continue
        if not part.strip():
            continue
        if (operator == "&&" and code != 0) or (operator == "||" and code == 0):
            continue
        result = _run_simple(host, part.strip())
        code = result.exit_code
        seconds += result.seconds
        if result.output:
            output.append(result.output)
        if result.reboot:
            return CommandResult(code, "".join(output), reboot=True, seconds=seconds)
        if part.strip().startswith("exit"):
            break
    return CommandResult(code, "".join(output), seconds=seconds)


def _run_simple(host: Host, text: str) -> CommandResult:
    try:
        words, quiet = _without_redirects(shlex.split(text))
    except ValueError as exc:
        return CommandResult(2, f"sh: 1: Syntax error: {exc}\n")
    if "|" in words:  # refuse rather than run the first command and print its unfiltered output
        return CommandResult(2, "sh: 1: pipelines (|) are not supported by the simulated host\n")
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]  # environment assignments such as DEBIAN_FRONTEND=noninteractive
    if words and words[0] == "sudo":
        words = words[1:]
    if not words:
        return CommandResult(0, "")
    name = words[0].rsplit("/", 1)[-1]
    args = words[1:]
    handler = _COMMANDS.get(name)
    result = CommandResult(127, f"sh: 1: {words[0]}: not found\n") if handler is None else handler(host, args)
    # one output stream stands for both: a failing command's text is taken as stderr, else as stdout
    if ("2" if result.exit_code else "1") in quiet:
        result.output = ""
    return result


def _without_redirects(words: list[str]) -> tuple[list[str], set[str]]:
    """Drop redirections (``2>/dev/null``, ``> /dev/null``, ``2>&1``, ``&>/dev/null``); return the
    remaining words and the streams ("1", "2") sent to /dev/null."""
    out: list[str] = []
    quiet: set[str] = set()
    pending: str | None = None  # a redirection operator waiting for its target word
    for word in words:
        if pending is not None:
            if word == "/dev/null":
                quiet |= {"1", "2"} if pending == "&" else {pending}
            pending = None
            continue
        match = re.fullmatch(r"(\d|&)?>>?(&\d|/dev/null)?", word)
        if match is None:
            out.append(word)
            continue
        stream, target = match.group(1) or "1", match.group(2)
        if target is None:
            pending = stream
        elif target == "/dev/null":
            quiet |= {"1", "2"} if stream == "&" else {stream}
    return out, quiet


def _test(host: Host, args: list[str]) -> CommandResult:
    if args and args[-1] == "]":
        args = args[:-1]
    if len(args) == 2 and args[0] in ("-f", "-e"):
        exists = args[1] == SENTINEL and host.reboot_required
        exists = exists or (args[1] == SENTINEL + ".pkgs" and host.reboot_required)
        return CommandResult(0 if exists else 1, "")
    return CommandResult(2, f"sh: 1: test: unsupported expression {' '.join(args)}\n")


def _cat(host: Host, args: list[str]) -> CommandResult:
    out = []
    for path in args:
        if path == SENTINEL and host.reboot_required:
            out.append("*** System restart required ***\n")
        elif path == SENTINEL + ".pkgs" and host.reboot_required:
            kernel = host.pending_kernel or host.running_kernel
            out.append(f"linux-image-{kernel}\n")
        elif path == "/proc/sys/kernel/random/boot_id":
            out.append(host.boot_id + "\n")
        elif path == "/etc/os-release":
            version = host.os_image.split()[1] if len(host.os_image.split()) > 1 else ""
            out.append(f'NAME="Ubuntu"\nVERSION="{version}"\nPRETTY_NAME="{host.os_image}"\nID=ubuntu\n')
        elif path == "/etc/hostname":
            out.append(host.node_name + "\n")
        else:
            return CommandResult(1, "".join(out) + f"cat: {path}: No such file or directory\n")
    return CommandResult(0, "".join(out))


def _uname(host: Host, args: list[str]) -> CommandResult:
    if args == ["-r"]:
        return CommandResult(0, host.running_kernel + "\n")
    if args in ([], ["-s"]):
        return CommandResult(0, "Linux\n")
    return CommandResult(1, f"uname: unsupported option {' '.join(args)}\n")


def _upgradable_lines(host: Host) -> list[str]:
    lines = []
    if host.available_kernel:
        lines.append(
            f"linux-azure/jammy-updates {host.available_kernel} amd64 "
            f"[upgradable from: {host.running_kernel}]"
        )
    for i in range(host.upgradable_packages - len(lines)):
        lines.append(f"package-{i + 1}/jammy-updates 1.0.{i + 1} amd64 [upgradable from: 1.0.0]")
    return lines


def _apt(host: Host, args: list[str]) -> CommandResult:
    flags = {a for a in args if a.startswith("-")}
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["list"] and "--upgradable" in flags:
        return CommandResult(0, "Listing...\n" + "".join(line + "\n" for line in _upgradable_lines(host)))
    if words[:1] == ["update"]:
        return CommandResult(0, "Reading package lists... Done\n", seconds=2)
    if words[:1] in (["upgrade"], ["dist-upgrade"], ["full-upgrade"]):
        if flags & {"-s", "--simulate", "--dry-run"}:
            lines = _upgradable_lines(host)
            return CommandResult(0, "".join(f"Inst {line.split('/')[0]}\n" for line in lines))
        return _install_updates(host)
    return CommandResult(100, f"E: Invalid operation {' '.join(words) or '(none)'}\n")


def _install_updates(host: Host) -> CommandResult:
    count = max(host.upgradable_packages, 1 if host.available_kernel else 0)
    if host.available_kernel:
        host.pending_kernel = host.available_kernel
        host.available_kernel = None
        host.reboot_required = True
    host.upgradable_packages = 0
    return CommandResult(
        0,
        f"{count} upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n",
        seconds=5 if count else 1,
    )


def _systemctl(host: Host, args: list[str]) -> CommandResult:
    if args[:1] == ["reboot"]:
        return CommandResult(0, "", reboot=True)
    return CommandResult(1, f"systemctl: unsupported command {' '.join(args)}\n")


def _shutdown(host: Host, args: list[str]) -> CommandResult:
    if "-r" in args:
        return CommandResult(0, "", reboot=True)
    return CommandResult(1, "shutdown: only reboots (-r) are supported\n")


def _sleep(host: Host, args: list[str]) -> CommandResult:
    try:
        return CommandResult(0, "", seconds=float(args[0]))
    except (IndexError, ValueError):
        return CommandResult(1, "sleep: invalid time interval\n")


def _exit(host: Host, args: list[str]) -> CommandResult:
    try:
        return CommandResult(int(args[0]) if args else 0, "")
    except ValueError:
        return CommandResult(2, f"sh: 1: exit: Illegal number: {args[0]}\n")


_COMMANDS = {
    "test": _test,
    "[": _test,
    "cat": _cat,
    "uname": _uname,
    "hostname": lambda host, args: CommandResult(0, host.node_name + "\n"),
    "apt": _apt,
    "apt-get": _apt,
    "unattended-upgrade": lambda host, args: _install_updates(host),
    "systemctl": _systemctl,
    "reboot": lambda host, args: CommandResult(0, "", reboot=True),
    "shutdown": _shutdown,
    "echo": lambda host, args: CommandResult(0, " ".join(args) + "\n"),
    "true": lambda host, args: CommandResult(0, ""),
    "false": lambda host, args: CommandResult(1, ""),
    "exit": _exit,
    "sleep": _sleep,
}
