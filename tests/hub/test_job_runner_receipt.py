"""What a site ran a job with (runner image id, data fingerprint) is recorded with its result."""

from marketplace.jobs.models import Result
from tests.hub.helpers import claim, error_code, post_result, submit

IMAGE = "sha256:" + "ab" * 32
DATA = "cd" * 32


def test_the_runner_image_and_data_fingerprint_are_recorded_with_the_result(vendor, site, open_task):
    submit(vendor, open_task)
    job = claim(site)
    response = post_result(site, job["id"], runner={"image": IMAGE, "data": DATA}, attempt=job["attempt_token"])
    assert response.status_code == 200, response.content
    result = Result.objects.get(job_id=job["id"])
    assert (result.runner_image, result.data_fingerprint) == (IMAGE, DATA)


def test_a_malformed_runner_receipt_is_a_400_and_changes_nothing(vendor, site, open_task):
    submit(vendor, open_task)
    job = claim(site)
    for runner in ({"image": "latest", "data": DATA}, {"image": IMAGE}, "x", {"image": IMAGE, "data": DATA, "x": 1}):
        response = post_result(site, job["id"], runner=runner)
        assert response.status_code == 400 and error_code(response) == "invalid_runner", runner
    assert not Result.objects.exists()
