"""Ray's connection errors name their real cause (issue 19): Ray wraps it in a generic message."""

import pytest

from resflow.executors.pool import ray_cause


class InvalidAuthToken(Exception):
    pass


def wrapped(inner: BaseException, outer_text: str) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as cause:
            raise ConnectionError(outer_text) from cause
    except ConnectionError as err:
        return err


def test_the_innermost_auth_error_is_named_not_the_generic_wrapper():
    err = wrapped(
        InvalidAuthToken("the cluster requires a token; none or a wrong one was given"),
        "Failed to connect to GCS at address 10.0.0.1:6379 within 60 seconds.",
    )
    text = ray_cause(err)
    assert text.startswith("InvalidAuthToken:") and "token" in text
    assert "Failed to connect" not in text


def test_a_cause_line_later_in_a_long_message_is_found():
    err = RuntimeError("Failed to connect to the cluster.\nDetails:\n  Unauthenticated: invalid token\n")
    assert ray_cause(err) == "RuntimeError: Unauthenticated: invalid token"


def test_a_plain_error_keeps_its_first_line_and_a_wrapped_one_names_its_cause():
    assert ray_cause(ValueError("bad address 'x'\nmore")) == "ValueError: bad address 'x'"
    err = wrapped(OSError("Connection refused"), "Failed to connect to GCS")
    assert ray_cause(err) == "Failed to connect to GCS (cause: OSError: Connection refused)"


def test_connect_ray_reports_the_cause_in_one_line(monkeypatch):
    ray = pytest.importorskip("ray")
    from resflow.errors import ResflowError
    from resflow.executors import pool as workers

    def init(**kwargs):
        raise wrapped(InvalidAuthToken("token rejected by the cluster"), "Failed to connect to GCS within 60 s")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(workers, "_host_port", lambda address: None)  # (no reachability probe)
    with pytest.raises(ResflowError) as info:
        workers.connect_ray(1, "ray-head:6379")
    message = str(info.value)
    assert "\n" not in message and "InvalidAuthToken: token rejected by the cluster" in message
