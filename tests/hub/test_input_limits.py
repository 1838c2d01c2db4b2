"""Input limits: no body, query string or upload turns into a 500, an HTML page or a full read.

JSON nesting and integer range are refused by the API's parser, oversized bodies answer the API's
JSON error, uploads are capped from Content-Length and while streaming, and python_package
archives are judged at upload by the sites' own unpacking rules.
"""

import functools
import io
import json
import stat
import tarfile
import zipfile

import pytest
from django.urls import URLPattern, get_resolver

from evaluator.artifacts import MAX_DEPTH, MAX_ENTRIES, MAX_TOTAL_BYTES, InvalidArtifact, prepare_model
from marketplace.catalog.models import DataShard
from marketplace.core.parsers import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, json_nesting_exceeds
from marketplace.egress.models import EgressRecord
from marketplace.jobs.models import Job, JobStatus, Result
from marketplace.submissions.models import Submission
from tests.conftest import TASK_SPEC, make_task, upload
from tests.hub.helpers import claim, error_code, files_under, post_result, release_body, submit, with_receipt

MIB = 1024 * 1024
HUGE = 2**64


def _json_error(response, status: int) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    return error_code(response)


# --- JSON depth -------------------------------------------------------------------------------


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_a_body_nested_10000_deep_is_a_400_on_a_person_endpoint(owner, opener):
    closer = "]" if opener == "[" else "}"
    body = opener * 10_000 + "1" + closer * 10_000
    response = owner.client.post("/api/v1/tasks", body, content_type="application/json")
    assert _json_error(response, 400) == "parse_error"
    assert "nested deeper than 64 levels" in response.json()["error"]["message"]


def test_a_body_nested_10000_deep_is_a_400_on_the_agent_endpoints(site, running):
    _, job = running
    deep = "[" * 10_000 + "]" * 10_000
    for path in (
        "/api/v1/agent/heartbeat",
        "/api/v1/agent/jobs/claim",
        f"/api/v1/agent/jobs/{job['id']}/result",
    ):
        assert (
            _json_error(site.client.post(path, deep, content_type="application/json"), 400) == "parse_error"
        )
    assert not Result.objects.exists() and Job.objects.get(id=job["id"]).status == JobStatus.RUNNING


def test_an_unterminated_deep_body_is_a_400_too(site):
    response = site.client.post("/api/v1/agent/heartbeat", "[" * 100_000, content_type="application/json")
    assert _json_error(response, 400) == "parse_error"


def _nested(depth: int):
    value: object = '[{]}\\"[['  # brackets and escapes inside strings are not structure
    for level in range(depth):
        value = [value, 1] if level % 2 else {"k[": value, "v": "}"}
    return value


@pytest.mark.parametrize("depth", [0, 1, 2, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 500])
def test_the_nesting_check_measures_the_real_depth(depth):
    text = json.dumps(_nested(depth))
    assert json_nesting_exceeds(text) is (depth > MAX_JSON_DEPTH)
    assert json_nesting_exceeds(text, depth) is False
    if depth:
        assert json_nesting_exceeds(text, depth - 1) is True


def test_a_body_at_the_depth_limit_is_parsed(site):
    capabilities: dict = {}
    for _ in range(MAX_JSON_DEPTH - 2):  # the body and capabilities themselves are two levels
        capabilities = {"x": capabilities}
    response = site.client.post(
        "/api/v1/agent/heartbeat", {"agent_id": "a1", "capabilities": capabilities}, format="json"
    )
    assert response.status_code == 200, response.content


# --- integer range ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, HUGE, 10**400])
def test_an_integer_outside_64_bits_in_a_body_is_a_400(site, open_task, value):
    body = {"task": open_task.id, "row_count": value, "fingerprint": "b" * 64, "split_sizes": {"test": 10}}
    response = site.client.post("/api/v1/agent/shards", json.dumps(body), content_type="application/json")
    assert _json_error(response, 400) == "parse_error"
    assert "outside the signed 64-bit range" in response.json()["error"]["message"]
    assert not DataShard.objects.filter(fingerprint="b" * 64).exists()


def test_an_integer_too_large_for_a_float_in_a_release_is_a_400_and_records_nothing(site, running, open_task):
    _, job = running
    body = with_receipt(release_body(open_task))
    histogram = body["statistics"]["score_histogram"]
    histogram[0][0] = 10**400
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json")
    assert _json_error(response, 400) == "parse_error"
    assert not Result.objects.exists() and not EgressRecord.objects.exists()
    assert Job.objects.get(id=job["id"]).status == JobStatus.RUNNING


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_a_number_that_overflows_a_float_is_a_400(site, number):
    body = f'{{"agent_id": "a1", "capabilities": {{"x": {number}}}}}'
    assert (
        _json_error(site.client.post("/api/v1/agent/heartbeat", body, content_type="application/json"), 400)
        == "parse_error"
    )


def test_integers_at_the_64_bit_bounds_pass_the_parser(site, open_task):
    body = {
        "task": open_task.id,
        "row_count": INT64_MAX,
        "fingerprint": "b" * 64,
        "split_sizes": {"test": 10},
    }
    response = site.client.post("/api/v1/agent/shards", body, format="json")
    assert response.status_code == 400, response.content  # past the column's range: refused, not a 500
    assert site.client.post("/api/v1/agent/heartbeat", {"agent_id": "a1", "capabilities": {"n": INT64_MIN}},
                            format="json").status_code == 200  # fmt: skip


def test_a_form_encoded_body_is_415_on_a_json_endpoint(site, open_task):
    response = site.client.post(
        "/api/v1/agent/shards",
        f"task={open_task.id}&row_count={HUGE}",
        content_type="application/x-www-form-urlencoded",
    )
    assert _json_error(response, 415) == "unsupported_media_type"


def test_an_integer_outside_64_bits_in_an_upload_form_is_a_4xx(vendor, open_task, settings):
    artifact = io.BytesIO(b"\x80\x04N.")
    artifact.name = "m.joblib"
    for fields in ({"task": str(HUGE)}, {"task": open_task.id, "organization": str(HUGE)}):
        response = vendor.client.post(
            "/api/v1/submissions", {**fields, "name": "m", "artifact_format": "sklearn", "artifact": artifact},
            format="multipart",
        )  # fmt: skip
        assert 400 <= response.status_code < 500, response.content
        artifact.seek(0)
    assert not Submission.objects.exists() and files_under(settings.MEDIA_ROOT) == []


# --- integers in the URL and the query string -------------------------------------------------


def _int_routes() -> list[str]:
    """Every API route with an int converter, with each id made 2**64 (or 2**63)."""
    from marketplace import api_urls

    routes = []
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        route = str(pattern.pattern)
        if "<int:" in route:
            for value in (HUGE, INT64_MAX + 1):
                parts = [p.split(">", 1) for p in route.split("<int:")]
                routes.append("/api/v1/" + parts[0][0] + "".join(f"{value}{rest[1]}" for rest in parts[1:]))
    return routes


def test_every_api_route_with_an_id_is_covered():
    assert get_resolver().resolve("/api/v1/tasks/1")  # the API is mounted where _int_routes assumes
    assert len(_int_routes()) >= 2 * 30


@pytest.mark.parametrize("path", _int_routes())
def test_an_id_outside_64_bits_in_the_url_is_a_4xx_for_everyone(
    owner, vendor, site, visitor, open_task, path
):
    for client in (owner.client, vendor.client, site.client, visitor):
        for method in ("get", "post", "put", "delete"):
            response = (
                getattr(client, method)(path, {}, format="json") if method != "get" else client.get(path)
            )
            assert 400 <= response.status_code < 500, (
                method,
                path,
                response.status_code,
                response.content[:200],
            )


@pytest.mark.parametrize(
    "query",
    [
        f"/api/v1/submissions?task={HUGE}",
        f"/api/v1/submissions?task=-{HUGE}",
        f"/api/v1/jobs?submission={HUGE}",
        f"/api/v1/jobs?task={HUGE}&site={HUGE}",
        f"/api/v1/egress?site={HUGE}",
        f"/api/v1/egress?vendor={INT64_MAX + 1}",
        f"/api/v1/egress.csv?task={HUGE}",
        f"/api/v1/tasks?page={HUGE}",
        f"/api/v1/submissions?page={HUGE}&page_size={HUGE}",
    ],
)
def test_an_integer_outside_64_bits_in_the_query_string_is_a_4xx(owner, vendor, query):
    for persona in (owner, vendor):
        response = persona.client.get(query)
        assert response.status_code in (400, 404), (query, response.status_code, response.content[:200])
        assert "error" in response.json()


def test_an_id_filter_inside_64_bits_still_filters(vendor, open_task):
    submit(vendor, open_task)
    assert vendor.client.get(f"/api/v1/submissions?task={open_task.id}").json()["count"] == 1
    assert vendor.client.get(f"/api/v1/submissions?task={INT64_MAX}").json()["count"] == 0


# --- oversized bodies -------------------------------------------------------------------------


def test_a_json_body_over_2_mib_is_the_apis_413(owner, settings):
    body = json.dumps({"title": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    response = owner.client.post("/api/v1/tasks", body, content_type="application/json")
    assert _json_error(response, 413) == "too_large"
    assert response.json()["error"]["details"] == {"limit": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}


def test_an_agent_body_over_2_mib_is_the_apis_413(site, running, settings):
    _, job = running
    body = json.dumps({"agent_id": "agent-1", "padding": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    response = site.client.post(
        f"/api/v1/agent/jobs/{job['id']}/result", body, content_type="application/json"
    )
    assert _json_error(response, 413) == "too_large"
    assert not Result.objects.exists()


def test_too_many_form_fields_in_an_upload_is_a_json_400(vendor, open_task, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"f{i}": "x" for i in range(20)}
    response = vendor.client.post("/api/v1/submissions", {**fields, "task": open_task.id}, format="multipart")
    assert _json_error(response, 400) == "too_many_fields"


# --- upload caps: before and while reading ----------------------------------------------------

BOUNDARY = "vaultbench-boundary"


class CountingBody:
    """A multipart body made as it is read (nothing held in memory), counting what the hub reads.
    The file is a pickle's first bytes, then filler."""

    MAGIC = b"\x80\x04"

    def __init__(self, fields: dict, file_bytes: int, *, file_field: str = "artifact"):
        head = "".join(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        )
        head += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="m.bin"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
        self.head, self.tail = head.encode(), f"\r\n--{BOUNDARY}--\r\n".encode()
        self.file_bytes = file_bytes
        self.length = len(self.head) + file_bytes + len(self.tail)
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        start = self.read_bytes
        end = self.length if size is None or size < 0 else min(self.length, start + size)
        h, f = len(self.head), self.file_bytes
        first, last = max(start, h) - h, min(end, h + f) - h  # the file's part of this read
        part = bytearray(b"\x80" * max(0, last - first))
        for i in range(first, min(last, len(self.MAGIC))):
            part[i - first] = self.MAGIC[i]
        out = self.head[start:end] + bytes(part)
        out += self.tail[max(0, start - h - f) : max(0, end - h - f)]
        self.read_bytes = end
        return out

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - the multipart parser reads by size
        raise NotImplementedError


def _send(persona, method: str, path: str, body: CountingBody, *, declared: int | None = None):
    return persona.client.generic(
        method, path, content_type=f"multipart/form-data; boundary={BOUNDARY}",
        **{"wsgi.input": body, "CONTENT_LENGTH": str(body.length if declared is None else declared)},
    )  # fmt: skip


def _nothing_kept(vendor, task, settings) -> None:
    assert not Submission.objects.exists()
    assert files_under(settings.MEDIA_ROOT) == []
    assert vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()["used_total"] == 0


def test_a_200_mib_upload_over_the_cap_is_refused_before_a_byte_is_read(vendor, open_task, settings):
    settings.VAULTBENCH_MAX_ARTIFACT_BYTES = 100 * MIB
    body = CountingBody({"task": open_task.id, "name": "big", "artifact_format": "sklearn"}, 200 * MIB)
    response = _send(vendor, "POST", "/api/v1/submissions", body)
    assert _json_error(response, 413) == "too_large"
    assert response.json()["error"]["details"] == {"limit": 100 * MIB}
    assert body.read_bytes == 0
    _nothing_kept(vendor, open_task, settings)


def test_an_upload_that_passes_the_cap_while_streaming_stops_there_and_leaves_no_temp_file(
    vendor, open_task, settings, tmp_path
):
    # Within the Content-Length slack (the form's other fields), so only the streaming cap can stop it;
    # over FILE_UPLOAD_MAX_MEMORY_SIZE, so it streams to a temporary file.
    settings.VAULTBENCH_MAX_ARTIFACT_BYTES = 3 * MIB
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    (tmp_path / "upload-tmp").mkdir()
    body = CountingBody(
        {"task": open_task.id, "name": "big", "artifact_format": "sklearn"}, 4 * MIB + MIB // 2
    )
    response = _send(vendor, "POST", "/api/v1/submissions", body)
    assert _json_error(response, 413) == "too_large"
    assert "limit is 3145728 bytes" in response.json()["error"]["message"]
    assert 3 * MIB < body.read_bytes <= 3 * MIB + 256 * 1024 < body.length
    assert list((tmp_path / "upload-tmp").iterdir()) == []
    _nothing_kept(vendor, open_task, settings)


def test_a_content_length_that_understates_the_body_reads_no_further(vendor, open_task, settings):
    # Django reads at most Content-Length bytes; the rest of the stream is never touched.
    body = CountingBody({"task": open_task.id, "name": "m", "artifact_format": "sklearn"}, 8 * MIB)
    response = _send(vendor, "POST", "/api/v1/submissions", body, declared=MIB)
    assert 400 <= response.status_code < 500
    assert body.read_bytes <= MIB
    _nothing_kept(vendor, open_task, settings)


def test_an_upload_under_the_cap_is_still_accepted(vendor, open_task, settings):
    settings.VAULTBENCH_MAX_ARTIFACT_BYTES = 3 * MIB
    body = CountingBody({"task": open_task.id, "name": "ok", "artifact_format": "sklearn"}, 3 * MIB)
    response = _send(vendor, "POST", "/api/v1/submissions", body)
    assert response.status_code == 201, response.content
    assert body.read_bytes == body.length
    assert Submission.objects.get().size == 3 * MIB


def test_a_sample_over_its_cap_is_refused_before_a_byte_is_read(owner, settings):
    settings.VAULTBENCH_MAX_SAMPLE_BYTES = MIB
    task = make_task(owner)
    body = CountingBody({}, 50 * MIB, file_field="file")
    response = _send(owner, "PUT", f"/api/v1/tasks/{task.id}/sample", body)
    assert _json_error(response, 413) == "too_large"
    assert body.read_bytes == 0
    task.refresh_from_db()
    assert not task.sample_file


# --- archives: the sites' rules at upload -----------------------------------------------------


def _zip(members: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@functools.cache
def _zip_bomb() -> bytes:
    """About 1 MiB that inflates past the sites' total (a real bomb: the sizes are true)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("model.py", b"def load(path): ...\n")
        with archive.open("weights.bin", "w", force_zip64=True) as member:
            block = bytes(16 * MIB)
            for _ in range(MAX_TOTAL_BYTES // len(block) + 1):
                member.write(block)
    return buffer.getvalue()


def _tar_gz(members: list[tuple[str, bytes]], *, hardlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if hardlink:
            link = tarfile.TarInfo(hardlink)
            link.type, link.linkname = tarfile.LNKTYPE, "model.py"
            archive.addfile(link)
    return buffer.getvalue()


MODEL = ("model.py", b"def load(path): ...\n")
BAD_ARCHIVES = {
    "a zip symlink": lambda: _zip([MODEL], symlink="weights.bin"),
    "an absolute zip path": lambda: _zip([MODEL, ("/etc/cron.d/x", b"")]),
    "a dot-dot zip path": lambda: _zip([MODEL, ("lib/../../escape.py", b"")]),
    "a drive-letter zip path": lambda: _zip([MODEL, ("C:/escape.py", b"")]),
    "too many zip entries": lambda: _zip([MODEL] + [(f"f{i}.txt", b"") for i in range(MAX_ENTRIES)]),
    "a zip path too deep": lambda: _zip([MODEL, ("/".join(["d"] * MAX_DEPTH) + "/x.py", b"")]),
    "a duplicate zip entry": lambda: _zip([MODEL, MODEL]),
    "a zip bomb": _zip_bomb,
    "a tar hard link": lambda: _tar_gz([MODEL], hardlink="weights.bin"),
    "a dot-dot tar path": lambda: _tar_gz([MODEL, ("../escape.py", b"")]),
    "a tar path too deep": lambda: _tar_gz([MODEL, ("/".join(["d"] * MAX_DEPTH) + "/x.py", b"")]),
}


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
@pytest.mark.parametrize("name", BAD_ARCHIVES)
def test_an_archive_a_site_would_refuse_is_refused_at_upload_and_costs_nothing(
    vendor, open_task, settings, name
):
    data = BAD_ARCHIVES[name]()
    response = upload(vendor, open_task, data=data, fmt="python_package")
    assert _json_error(response, 400) == "implausible_format"
    assert response.json()["error"]["message"].startswith("The archive is refused: ")
    _nothing_kept(vendor, open_task, settings)


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
@pytest.mark.parametrize("name", BAD_ARCHIVES)
def test_the_sites_unpacker_refuses_the_same_archives(tmp_path, name):
    artifact = tmp_path / "artifact"
    artifact.write_bytes(BAD_ARCHIVES[name]())
    with pytest.raises(InvalidArtifact):
        prepare_model(artifact, model_format="python_package", dest=tmp_path / "model")


@pytest.mark.parametrize(
    "data",
    [
        _zip([MODEL, ("/".join(["d"] * (MAX_DEPTH - 1)) + "/x.py", b""), ("weights/w.bin", b"\0" * 1024)]),
        _tar_gz([MODEL, ("./pkg/util.py", b"x = 1\n")]),
    ],
)
def test_a_sound_package_is_accepted_by_the_hub_and_the_site(vendor, open_task, tmp_path, data):
    assert upload(vendor, open_task, data=data, fmt="python_package").status_code == 201
    artifact = tmp_path / "artifact"
    artifact.write_bytes(data)
    assert (
        prepare_model(artifact, model_format="python_package", dest=tmp_path / "model") / "model.py"
    ).is_file()


@pytest.fixture
def running(vendor, site, open_task):
    submission = submit(vendor, open_task)
    return submission, claim(site)


def test_a_valid_release_still_goes_through(site, running):
    _, job = running
    assert post_result(site, job["id"]).status_code == 200


def test_an_integer_past_its_database_column_is_a_4xx_not_a_500(owner):
    """64-bit integers pass the parser; a 32-bit column (PostgreSQL) must still answer 4xx."""
    for field in ("quota_per_day", "min_test_rows", "final_submissions"):
        response = owner.client.post("/api/v1/tasks", {**TASK_SPEC, field: 2**40}, format="json")
        assert 400 <= response.status_code < 500, (field, response.content)
