"""Typed settings, built once by `create_app` or the CLI and passed down.

Every field can be set with a `LASTEDOCATION_<NAME>` environment variable or in
an optional TOML file named by `LASTEDOCATION_CONFIG`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lastedocation.backup.targets import BackupTarget

MB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LASTEDOCATION_", extra="forbid")

    data_dir: Path = Field(
        default=Path("./studio-data"),
        description="One folder for everything the studio stores: database, datasets, runs.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite at DATA_DIR/studio.db. "
        "A postgresql+psycopg:// URL also works.",
    )
    server_roots: list[Path] = Field(
        default_factory=list,
        description="Folders on the server whose files and folders admins may name (a model "
        "folder to register or train from, a validation file, a Hub cache), as a JSON list: "
        '["/srv/models"]. Members never name server paths: they name datasets and models by '
        "id. The data folder itself is never allowed (its objects are named by id).",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_upload_mb: int = Field(default=100, ge=1, description="Largest dataset upload, in MB.")
    max_model_upload_mb: int = Field(
        default=20_000, ge=1, description="Largest model archive upload, in MB."
    )
    max_archive_files: int = Field(
        default=10_000, ge=1, description="Most files a model archive may hold."
    )
    # request limits (security)
    max_body_kb: int = Field(
        default=1024,
        ge=1,
        description="Largest request body of a JSON call or a web form, in KiB (file uploads "
        "have their own limits); a larger body answers 413 before it is read.",
    )
    max_chat_body_kb: int = Field(
        default=4096,
        ge=1,
        description="Largest body of POST /v1/chat/completions, in KiB: a whole conversation "
        "(4 MiB holds a 128k-token context even with every character sent \\u-escaped).",
    )
    max_archive_ratio: float = Field(
        default=20.0,
        ge=1,
        description="A model archive may extract to at most this many times its own size "
        "(its first MiB is not judged); weights compress about 1.1x, so more is a bomb.",
    )
    max_model_extracted_mb: int = Field(
        default=40_000,
        ge=1,
        description="Most bytes a model archive may extract to, in MB; about twice "
        "max_model_upload_mb, as weights barely compress.",
    )
    max_record_chars: int = Field(
        default=200_000, ge=1, description="A record longer than this is reported as over-long."
    )
    max_errors_shown: int = Field(
        default=20, ge=1, description="How many problems a validation report lists."
    )
    import_sample_dataset: bool = Field(
        default=True, description="Import the bundled Persian sample dataset on first start."
    )
    bundled_speech_model: bool = Field(
        default=True,
        description="Register the bundled Whisper base speech model on first start.",
    )
    max_audio_upload_mb: int = Field(
        default=100, ge=1, description="Largest audio file to transcribe, in MB."
    )
    max_audio_seconds: int = Field(
        default=4 * 3600, ge=1, description="Longest audio to transcribe, in seconds."
    )
    default_speech_model: str | None = Field(
        default=None,
        description="The speech model (name or id) that `whisper-1`, what OpenAI's clients "
        "send, means; default: the bundled whisper-base.",
    )
    whisper_compute_type: Literal["auto", "float32", "int8", "float16", "int8_float16"] = Field(
        default="auto",
        description="How faster-whisper computes: auto is float16 on a GPU; on a CPU, int8 "
        "where the CPU has int8 dot-product units (VNNI or AMX), else float32 (int8 is "
        "slower than float32 on a CPU without them).",
    )
    speech_max_models: int = Field(
        default=2, ge=1, description="Speech models kept loaded at once (least recently used go)."
    )
    transcription_workers: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Background transcriptions that run at once; the rest wait in a queue.",
    )
    max_queued_transcriptions: int = Field(
        default=10,
        ge=1,
        description="Background transcriptions one account may have waiting or running at "
        "once (each holds its uploaded audio on disk until it ends).",
    )
    max_speech_upload_mb: int = Field(
        default=2048,
        ge=1,
        description="Largest speech dataset archive (a .zip, .tar or .tar.gz of audio files "
        "with a metadata.csv or metadata.jsonl) sent to POST /api/v1/datasets/speech, in MB "
        "(POST /api/v1/datasets takes archives too, under max_upload_mb). Larger because "
        "audio barely compresses: 100 MB hold about 50 minutes of 16 kHz wav.",
    )
    max_speech_extracted_mb: int = Field(
        default=4096,
        ge=1,
        description="Most bytes a speech dataset archive may extract to, in MB (its "
        "compression ratio is also capped by max_archive_ratio).",
    )
    max_speech_files: int = Field(
        default=100_000, ge=1, description="Most files a speech dataset archive may hold."
    )
    min_speech_clip_s: float = Field(
        default=0.3, ge=0, description="A speech dataset clip shorter than this is refused."
    )
    max_speech_clip_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A speech dataset clip longer than this is refused (30 s: Whisper's window).",
    )
    tts_default_voice: str = Field(
        default="espeak-fa",
        description="The voice that OpenAI's voice names (alloy, nova, ...) and tts-1 mean: "
        "a voice id from GET /api/v1/speech/voices.",
    )
    tts_max_loaded_voices: int = Field(
        default=2, ge=1, description="Neural voices kept loaded at once (least recently used go)."
    )
    max_voice_mb: int = Field(
        default=2000,
        ge=1,
        description="Largest voice (its model files) an admin may register, in MB.",
    )
    espeak_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest espeak-ng may take to read one sentence."
    )
    backup_targets: list[BackupTarget] = Field(
        default_factory=list,
        description="Where backups go, as a JSON list or [[backup_targets]] tables in the "
        "TOML file: each has a name, a kind (folder, s3, sftp, drive), where, the files "
        "holding its secrets (mode 0600), a passphrase_file to encrypt, a schedule "
        "(every_hours or daily_at) and retention (keep_last, keep_daily, keep_weekly).",
    )
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How `lastedocation serve` writes its log (to stderr): text lines, or "
        "JSON lines (time, level, logger, message, request_id; an access line per request "
        "adds method, path, route, status, duration_ms). Every answer carries its request "
        "id in X-Request-ID (a sane incoming X-Request-ID is kept).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="A token a Prometheus scraper sends as `Authorization: Bearer <token>` "
        "to read GET /metrics (any other request for it answers 401). Without one, only a "
        "client on loopback (127.0.0.1, ::1) that did not come through a proxy (no "
        "Forwarded, X-Forwarded-For or X-Real-IP header) may read it; others get 403. Set "
        "it when the scraper runs elsewhere, in another container, or behind the proxy.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Key that signs access tokens; default: a random key kept in "
        "DATA_DIR/secret.key (created on first start, readable by its owner only).",
    )
    max_concurrent_runs: int | None = Field(
        default=None,
        ge=1,
        description="Runs training at once; default: one per GPU, or one (on Ray: no limit "
        "but the cluster's resources).",
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where trainers run: processes on this machine, or a Ray cluster (the "
        "`ray` extra). On Ray the data folder must be storage every node mounts at the same "
        "path, and every node has the studio installed.",
    )
    ray_address: str = Field(
        default="auto",
        description="The Ray cluster: auto (this machine is one of its nodes), HOST:6379 "
        "(its head, from a node), or ray://HOST:10001 (Ray Client, from outside it).",
    )
    ray_device: Literal["gpu", "cpu"] = Field(
        default="gpu",
        description="What each of a run's training.devices asks the Ray cluster for: a GPU, "
        "or a CPU process (a cluster without GPUs).",
    )
    ray_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources every run asks for, as a JSON object: "
        '{"trainer": 1} keeps runs to nodes started with --resources=\'{"trainer": N}\' '
        "(and to N runs at once on each).",
    )
    supervisor_interval_s: float = Field(default=0.5, gt=0)
    leader_lease_s: float = Field(
        default=5.0,
        gt=0,
        description="Of several servers on one database (uvicorn --workers, replicas), "
        "one leads: it starts trainers and ingests their events, renewing its lease every "
        "supervisor tick. When it dies, another takes over within this many seconds. "
        "Keep it several times supervisor_interval_s.",
    )
    pause_runs_on_shutdown: bool = Field(
        default=False,
        description="When the server stops (SIGTERM, `docker stop`), pause every running "
        "trainer (checkpoint, then exit) and resume those runs at the next start. Off on a "
        "workstation, where trainers outlive a server restart and are re-attached; on in "
        "containers, where the trainers die with the container.",
    )
    shutdown_pause_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a stopping server waits for paused trainers to checkpoint and "
        "exit; keep it below the container's stop grace period.",
    )
    heartbeat_timeout_s: float = Field(
        default=6.0, gt=0, description="A trainer silent this long is killed and interrupted."
    )
    inference_max_models: int = Field(
        default=2, ge=1, description="Models kept loaded for chat at once (least recently used go)."
    )
    inference_min_free_memory_mb: int = Field(
        default=1024,
        ge=0,
        description="Before loading a model, unload others while less memory than this would "
        "stay free.",
    )
    max_new_tokens_limit: int = Field(
        default=4096, ge=1, description="Most tokens one chat answer may have."
    )
    sse_send_timeout_s: float = Field(
        default=30.0, gt=0, description="An event-stream client that stops reading is dropped."
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _targets_apart(self) -> Settings:
        names = [target.name for target in self.backup_targets]
        if len(set(names)) != len(names):
            raise ValueError("backup_targets: two targets have the same name")
        for target in self.backup_targets:
            if target.kind == "folder" and Path(target.path).resolve().is_relative_to(
                self.data_dir
            ):
                raise ValueError(
                    f"backup target {target.name!r}: the folder is inside the data folder; "
                    "a backup must live apart from what it protects"
                )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MB

    @property
    def max_model_upload_bytes(self) -> int:
        return self.max_model_upload_mb * MB

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'studio.db'}"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def hub_cache_dir(self) -> Path:
        """Hub downloads, shared by imports and runs that train from a Hub id."""
        return self.data_dir / "hub-cache"

    @property
    def voices_dir(self) -> Path:
        """Text-to-speech voices an admin registered, one folder each."""
        return self.data_dir / "voices"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def secret_key_path(self) -> Path:
        return self.data_dir / "secret.key"

    def ensure_dirs(self) -> None:
        for folder in (self.data_dir, self.datasets_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("LASTEDOCATION_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and TOML file), with explicit overrides on top."""
    return Settings(**overrides)
