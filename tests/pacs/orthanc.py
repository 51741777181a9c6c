"""A real PACS for the tests: Orthanc with its DICOMweb plugin (Debian `orthanc`, `orthanc-dicomweb`;
.ci/run installs them), on a free loopback port with a temporary storage folder.

    with running_orthanc(tmp_path) as pacs:              # pacs.dicomweb: the URL `ultrasonic pacs --url` takes
        pacs.upload(path)                                # REST POST /instances
        pacs.count()                                     # instances stored
    with running_orthanc(tmp_path, users={"doctor": "secret"}) as pacs: ...   # HTTP basic required

The DICOM network port is off (DicomServerEnabled false): the tests speak DICOMweb and REST only.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

PLUGIN_DIRS = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc"]
START_TIMEOUT = 60


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).exists()), None)


def dicomweb_plugin() -> str | None:
    for folder in PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []
        if found:
            return str(found[0])
    return None


def config(port: int, storage: Path, users: dict[str, str] | None = None, lua: Path | None = None) -> dict:
    """The configuration the tests (and docs/pacs.md) use: loopback only, DICOMweb at /dicom-web/."""
    return {
        "Name": "ultrasonic-test", "HttpPort": port, "DicomServerEnabled": False,
        "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "Plugins": [dicomweb_plugin()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users), "RegisteredUsers": users or {},
        "HttpTimeout": 60, "StableAge": 1, "LuaScripts": [str(lua)] if lua else [],
    }


@dataclass
class Orthanc:
    url: str
    auth: tuple[str, str] | None = None

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, path: Path) -> str:
        """Store one DICOM file through Orthanc's REST API; its Orthanc id."""
        answer = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), auth=self.auth, timeout=60)
        answer.raise_for_status()
        return answer.json()["ID"]

    def count(self) -> int:
        return requests.get(f"{self.url}/statistics", auth=self.auth, timeout=30).json()["CountInstances"]

    def study_instances(self, study_uid: str) -> list[dict]:
        """QIDO-RS: the instances of one study, with their Series Description (DICOM JSON)."""
        answer = requests.get(f"{self.dicomweb}/studies/{study_uid}/instances", auth=self.auth, timeout=30,
                              params={"includefield": "0008103E"})
        answer.raise_for_status()
        return answer.json() if answer.content else []

    def lookup(self, sop: str) -> str | None:
        """Orthanc's id of the instance of this SOP Instance UID, None when it has none."""
        found = requests.post(f"{self.url}/tools/lookup", data=sop, auth=self.auth, timeout=30).json()
        return next((f["ID"] for f in found if f["Type"] == "Instance"), None)

    def instance_file(self, sop: str) -> bytes:
        """The instance of this SOP Instance UID as a DICOM file (Orthanc's REST /instances/ID/file)."""
        orthanc_id = self.lookup(sop)
        assert orthanc_id, f"Orthanc has no instance {sop}"
        return requests.get(f"{self.url}/instances/{orthanc_id}/file", auth=self.auth, timeout=30).content


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_orthanc(folder: Path, users: dict[str, str] | None = None, lua: str | None = None) -> Iterator[Orthanc]:
    """Orthanc started with its own config and storage under `folder`, stopped (and waited for) on exit;
    `lua`: a Lua script it runs (e.g. a ReceivedInstanceFilter that refuses some instances)."""
    binary, plugin = orthanc_binary(), dicomweb_plugin()
    if binary is None or plugin is None:
        pytest.skip("Orthanc or its DICOMweb plugin is missing: apt-get install orthanc orthanc-dicomweb (.ci/run does)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    script = None
    if lua:
        script = folder / "filter.lua"
        script.write_text(lua)
    (folder / "orthanc.json").write_text(json.dumps(config(port, folder / "storage", users, script), indent=2))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    pacs = Orthanc(f"http://127.0.0.1:{port}", auth=next(iter(users.items())) if users else None)
    try:
        _wait_until_up(pacs, process, folder / "orthanc.log")
        yield pacs
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_up(pacs: Orthanc, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{pacs.url}/system", auth=pacs.auth, timeout=5).ok:
                return
        time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer /system in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
