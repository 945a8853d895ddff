"""Without network, a download names what failed and how to use an existing cache instead."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nbutils import data
from nbutils.__main__ import main

EXPECTED = ("cifar-10-python.tar.gz", "NBUTILS_DATA=", "--data-root", "data_root",
            "train.npz", "test.npz", "'images'", "uint8", "N x 32 x 32 x 3", "'labels'", "int64")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network (every urlopen fails as a DNS lookup does), no cache, no NBUTILS_DATA."""

    def unreachable(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.delenv("NBUTILS_DATA", raising=False)
    monkeypatch.setattr(data, "DEFAULT_CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def test_failed_download_says_how_to_point_at_a_copy(offline: Path) -> None:
    with pytest.raises(data.DataError) as info:
        data.load_cifar()
    message = str(info.value)
    assert len(message.splitlines()) < 15
    assert "could not download cifar10" in message and "URLError" in message
    for item in EXPECTED:
        assert item in message, item
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_cifar100_message_names_its_extra_array(offline: Path) -> None:
    with pytest.raises(data.DataError, match="coarse_labels"):
        data.load_cifar(dataset="cifar100")


@pytest.mark.parametrize("err", [ConnectionResetError(104, "reset"), TimeoutError("timed out")])
def test_socket_errors_are_network_errors(offline: Path, monkeypatch: pytest.MonkeyPatch,
                                          err: OSError) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise err

    monkeypatch.setattr(urllib.request, "urlopen", broken)
    with pytest.raises(data.DataError, match=type(err).__name__):
        data.load_cifar()


def test_cli_exits_2_with_the_message(offline: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "could not download cifar10" in err and "NBUTILS_DATA=" in err
    assert "Traceback" not in err
