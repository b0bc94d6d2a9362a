"""Where the agent's manifest comes from: one ref of a git repository, or a local file.

A fetch yields an Artifact: the manifest's path on disk and the revision it came from, written the
way Flux writes them (`main@sha1:<commit>`). Git is driven through its command line, so every
transport, credential helper and signing format the user's git supports works here too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import PortctlError
from . import status as st
from .publish import redact, scrub

GIT_TIMEOUT = 120.0  # a fetch of one shallow commit; a hung remote must not stall the loop forever


class SourceError(PortctlError):
    """The manifest could not be fetched (or its commit is not trusted)."""

    reason = st.SOURCE_FETCH_FAILED


class Unsettled(SourceError):
    """The local file changed within the settle interval: it may be half-written, so it is not used yet."""

    reason = st.SOURCE_SETTLING

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in  # seconds until it has been still for the whole settle interval


class VerificationError(SourceError):
    """The fetched commit is unsigned, or signed by someone not allowed."""

    reason = st.VERIFICATION_FAILED


@dataclass(frozen=True)
class Artifact:
    revision: str  # main@sha1:<40 hex> for git, sha256:<hex> for a local file
    path: str  # the manifest on disk, as fetched
    content: bytes | None = None  # what was checked, when the file on disk may change after the fetch


MANIFEST_SUFFIXES = (".yaml", ".yml")


def expand(root: str, entries: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The manifest files `entries` name under `root`, and the problems: a file is itself; a
    directory is every *.yaml/*.yml in it, sorted (not recursive: a subdirectory may hold anything),
    and a directory with none is a problem. A missing file is kept: fetching it says why it fails."""
    files: list[str] = []
    problems: list[str] = []
    for entry in entries:
        full = os.path.join(root, entry) if root else entry
        if not os.path.isdir(full):
            files.append(entry)
            continue
        try:
            names = sorted(os.listdir(full))
        except OSError as exc:
            problems.append(f"cannot list the directory {entry}: {exc.strerror or exc}")
            continue
        found = [
            os.path.join(entry, n)
            for n in names
            if n.endswith(MANIFEST_SUFFIXES) and os.path.isfile(os.path.join(full, n))
        ]
        if not found:
            problems.append(f"the directory {entry} holds no manifest (*.yaml or *.yml)")
        files += found
    return tuple(dict.fromkeys(files)), tuple(problems)


class FileSource:
    """A manifest file on this machine; its revision is a hash of its content.

    An editor or a deploy writes a file in several steps, and a half-written manifest may well
    parse (a list cut short is still a list) and so prune whatever it has not reached yet. With a
    `settle` interval, a file is used only once its size, mtime and content have stayed the same
    for that long on `clock`; until then fetch() raises Unsettled and the last good revision stays.
    """

    def __init__(self, path: str, *, settle: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.settle = settle
        self.clock = clock
        self._seen: tuple[int, int, str] | None = None  # (size, mtime_ns, sha256) as last read
        self._since = 0.0  # when it was first read so

    def describe(self) -> str:
        return self.path

    def fetch(self) -> Artifact:
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                content = f.read()
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        digest = hashlib.sha256(content).hexdigest()
        seen = (stat.st_size, stat.st_mtime_ns, digest)
        now = self.clock()
        if seen != self._seen:
            self._seen, self._since = seen, now
        left = self._since + self.settle - now
        if left > 0:
            raise Unsettled(
                f"{self.path} changed {now - self._since:.0f}s ago; it is used once it has been unchanged "
                f"for {self.settle:g}s",
                left,
            )
        # The bytes checked are the bytes loaded: a write after this fetch is the next revision.
        return Artifact(f"sha256:{digest[:12]}", self.path, content)


class GitSource:
    """One ref of a repository, fetched shallow into `workdir` and checked out there.

    `verify` refuses a commit that `git verify-commit` does not accept. With `allowed_signers`
    (an SSH allowed-signers file) SSH signatures are checked against that file; otherwise git's
    own configuration (the GnuPG keyring of the user running the agent) decides. The list of
    trusted signers is never read from the repository itself: whoever can push could add a key.
    """

    def __init__(
        self,
        url: str,
        ref: str,
        path: str,
        workdir: str,
        *,
        verify: bool = False,
        allowed_signers: str | None = None,
    ) -> None:
        # A plain directory is fetched over file://, because git ignores --depth for local paths.
        self.url = f"file://{os.path.abspath(url)}" if os.path.isdir(url) else url
        self.ref = ref
        self.path = path
        self.workdir = workdir
        self.verify = verify
        self.allowed_signers = allowed_signers

    def describe(self) -> str:
        return f"{redact(self.url)} {self.ref}:{self.path}"

    def fetch(self) -> Artifact:
        if not os.path.isdir(os.path.join(self.workdir, ".git")):
            os.makedirs(self.workdir, exist_ok=True)
            self._git("init", "--quiet", what="create the checkout")
        self._git("fetch", "--quiet", "--depth=1", "--no-tags", self.url, self.ref, what=f"fetch {self.ref}")
        commit = self._git("rev-parse", "--verify", "FETCH_HEAD^{commit}", what="read the fetched commit").strip()
        if self.verify:
            self._verify(commit)
        self._git("checkout", "--quiet", "--force", "--detach", commit, what=f"check out {commit[:12]}")
        manifest = os.path.join(self.workdir, self.path)
        # A directory is several manifests: the agent lists them (expand()).
        if not os.path.isfile(manifest) and not os.path.isdir(manifest):
            raise SourceError(f"{self.path} does not exist at {self.ref}@sha1:{commit} of {redact(self.url)}")
        return Artifact(f"{self.ref}@sha1:{commit}", manifest)

    def _verify(self, commit: str) -> None:
        config = ["-c", f"gpg.ssh.allowedSignersFile={self.allowed_signers}"] if self.allowed_signers else []
        try:
            self._git(*config, "verify-commit", commit, what="verify")
        except SourceError as exc:
            raise VerificationError(
                f"commit {commit[:12]} of {redact(self.url)} is not signed by an allowed signer; not applied ({exc})"
            ) from exc

    def _git(self, *args: str, what: str) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
        try:
            done = subprocess.run(
                ["git", "-C", self.workdir, *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT,
                env=env,
                check=False,
            )
        except FileNotFoundError as exc:
            raise SourceError("the git command is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            raise SourceError(f"git could not {what} from {redact(self.url)} within {GIT_TIMEOUT:g}s") from exc
        if done.returncode != 0:
            # Shown in the log, /status and webhooks: never the credentials a URL may carry.
            detail = scrub((done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1])
            raise SourceError(f"git could not {what} from {redact(self.url)}: {detail}")
        return done.stdout
