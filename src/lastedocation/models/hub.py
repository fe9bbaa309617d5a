"""The Hugging Face Hub: push an exported model with a user's token, and download
a base model into the studio's cache.

    url = push_to_hub(folder, "me/persian-tiny", token=token, private=True)
    folder = download_model("owner/name", None, cache_dir, progress=on_progress)

Everything that can be checked here is checked before the first request: the
repo id, the token's shape, and the folder (safetensors only). The Hub's answers
and network failures become studio errors that say what to check; a raw
traceback never reaches the user.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants
from huggingface_hub import errors as hub_errors_module
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]
from tqdm.auto import tqdm

from lastedocation.errors import InvalidInput, NotFound, StudioError
from lastedocation.models.weights import check_model_folder
from lastedocation.training.model_source import ModelSourceError, download_from_hub

TOKENS_PAGE = "https://huggingface.co/settings/tokens"
# the HTTP client's base error (httpx's): what a request with no answer raises
HTTPError: type[Exception] = hub_errors_module.HTTPError  # type: ignore[attr-defined]
# (description, bytes or files done, total or None) -> None
Progress = Callable[[str, float, float | None], None]


class HubUnavailable(StudioError):
    """The Hub cannot be reached (offline, network, or the Hub itself failing)."""

    status_code = 503
    code = "hub_unavailable"


def check_repo_id(repo_id: str) -> str:
    """`owner/name` (or `name`, for the token's own account) as the Hub allows it."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InvalidInput(
            f"{repo_id!r} is not a valid Hub repository id: use owner/name, with letters, "
            f"digits, '-', '_' and '.' ({exc})",
            field="repo_id",
        ) from None
    return repo_id


def check_token(token: str | None) -> str:
    if not token or not token.strip():
        raise InvalidInput(
            f"a Hugging Face token with write access is required; create one at {TOKENS_PAGE}",
            field="token",
        )
    if not token.startswith("hf_") or any(c.isspace() for c in token):
        raise InvalidInput(
            "the token does not look like a Hugging Face token (they start with `hf_` and "
            f"hold no spaces); copy it again from {TOKENS_PAGE}",
            field="token",
        )
    return token


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


@contextmanager
def hub_errors(endpoint: str, repo_id: str) -> Iterator[None]:
    """Turn the Hub's and the network's failures into studio errors that say what to do."""
    try:
        yield
    except OfflineModeIsEnabled:
        raise HubUnavailable(
            "the Hugging Face Hub is switched off on this machine (HF_HUB_OFFLINE=1); "
            "unset HF_HUB_OFFLINE and restart the studio to reach the Hub",
            endpoint=endpoint,
        ) from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status == 401:
            raise InvalidInput(
                f"the Hub rejected the token (401); check it, or create a new one at {TOKENS_PAGE}",
                field="token",
            ) from None
        if status == 400:  # e.g. model card metadata the Hub does not accept
            raise InvalidInput(f"the Hub refused the request (400): {exc}") from None
        if status == 403:
            raise InvalidInput(
                f"the token may not write to {repo_id!r} (403); use a token with write access "
                "to that account or organization",
                field="token",
            ) from None
        raise HubUnavailable(
            f"the Hub at {endpoint} answered {status or 'an error'}: {exc}; try again later",
            endpoint=endpoint,
        ) from None
    except ValueError as exc:  # huggingface_hub's word for "the Hub refused this content"
        raise InvalidInput(f"the Hub refused the upload: {exc}") from None
    except (HTTPError, OSError) as exc:  # no answer at all: DNS, refused, timeout, proxy
        raise HubUnavailable(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}: {exc}); "
            "check this machine's network connection and proxy settings",
            endpoint=endpoint,
        ) from None


def push_to_hub(
    folder: Path,
    repo_id: str,
    *,
    token: str,
    private: bool = True,
    commit_message: str = "Upload model from LASTEDOCATION",
    endpoint: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` to it; return the repository's URL."""
    check_repo_id(repo_id)
    check_token(token)
    check_model_folder(folder)  # nothing but safetensors leaves the studio either
    api = HfApi(endpoint=endpoint, token=token, library_name="lastedocation")
    with hub_errors(api.endpoint, repo_id):
        who = api.whoami()
    role = (who.get("auth") or {}).get("accessToken", {}).get("role")
    if role == "read":
        raise InvalidInput(
            f"the token of {who.get('name', 'this account')} is read-only; create one with "
            f"write access at {TOKENS_PAGE}",
            field="token",
        )
    with hub_errors(api.endpoint, repo_id):
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=url.repo_id,
            folder_path=folder,
            commit_message=commit_message,
            ignore_patterns=[".*"],
        )
    return str(url)


def progress_class(progress: Progress) -> type[tqdm]:
    """A tqdm class for huggingface_hub that reports to `progress` instead of a terminal."""

    class _Progress(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own bars take a name; tqdm does not
            kwargs["file"] = io.StringIO()
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            progress(self.desc or "", self.n, self.total)
            return True

    return _Progress


def download_model(
    repo_id: str,
    revision: str | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download a base model from the Hub into `cache_dir` (once) and check it.

    The download is the trainer's (`download_from_hub`: safetensors, config and
    tokenizer files only); the folder must then pass `check_model_folder`.
    """
    check_repo_id(repo_id)
    # progress needs the keyword `tqdm_class` of download_from_hub, passed to snapshot_download
    extra: dict[str, Any] = {"tqdm_class": progress_class(progress)} if progress else {}
    try:
        with hub_errors(constants.ENDPOINT, repo_id):
            folder = download_from_hub(repo_id, revision, cache_dir, **extra)
            if ctranslate2_whisper(folder):  # faster-whisper's layout: its weights too
                extra["patterns"] = ["model.bin", "*.json", "vocabulary.*"]
                folder = download_from_hub(repo_id, revision, cache_dir, **extra)
    except ModelSourceError as exc:
        cause = exc.__context__  # download_from_hub raises `from None`; the cause is kept here
        if isinstance(cause, (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError)):
            raise NotFound(
                f"{repo_id!r} (revision {revision or 'main'}) is not on the Hub, or is private "
                "or gated; check the id and revision",
                repo_id=repo_id,
            ) from None
        raise HubUnavailable(
            f"{exc}; or register the model from a folder on the server, or upload it as an archive",
            repo_id=repo_id,
        ) from None
    if not ctranslate2_whisper(folder):  # CTranslate2's model.bin is read by its own parser
        check_model_folder(folder)
    return folder


def ctranslate2_whisper(folder: Path) -> bool:
    """Whether `folder`'s config.json is a CTranslate2 Whisper model's (faster-whisper)."""
    from lastedocation.speech.models import CT2, whisper_form

    probe = folder / "model.bin"
    if probe.is_file():
        return whisper_form(folder) == CT2
    return whisper_form(folder, weights_present=False) == CT2
