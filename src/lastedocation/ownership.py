"""Who may see, use, change and delete each object: the one place every service asks.

Owned objects are datasets, runs, models and transcriptions; what hangs off them (splits,
checkpoints, events, evaluations, exports) follows its object.

- An admin may do everything with every object.
- A member may do everything with their own objects.
- Shared objects (a dataset or model with no owner: the bundled sample, command-line
  imports, folders and Hub models an admin registered) are seen and used by every
  account (read, split, chat with, train on, evaluate, export), and changed or
  deleted by admins only (a member gets 403: they can see it, so 404 would lie).
- Runs are never shared: a run without an owner belongs to the studio (admins).
- Anything else answers 404, exactly as an id that does not exist, so a member
  cannot even learn that another member's object exists.

Ownership never lapses: deleting an account hands what it owned to the admin who
deletes it (`hand_over`), or deletes it all when the admin asks (`delete_owned`), so
nothing becomes shared by accident.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement, or_, select, true, update
from sqlalchemy.orm import Session

from lastedocation.auth.models import User
from lastedocation.errors import Conflict, Forbidden, NotFound
from lastedocation.settings import Settings

if TYPE_CHECKING:
    from lastedocation.inference.cache import ModelCache

Kind = Literal["dataset", "run", "model", "transcription"]
Action = Literal["see", "change"]

# kinds whose objects may have no owner and then belong to every account
SHAREABLE: frozenset[Kind] = frozenset({"dataset", "model"})


def may_see(user: User | None, kind: Kind, owner_id: int | None) -> bool:
    """user None is the studio itself (the supervisor, the evaluator)."""
    if user is None or user.is_admin or owner_id == user.id:
        return True
    return owner_id is None and kind in SHAREABLE


def check(
    user: User | None, kind: Kind, item_id: int, owner_id: int | None, action: Action = "see"
) -> None:
    """Raise NotFound when `user` may not see the object, Forbidden when they may see
    it but not change or delete it."""
    if not may_see(user, kind, owner_id):
        raise NotFound(f"no {kind} with id {item_id}", **{f"{kind}_id": item_id})
    if action == "change" and user is not None and not user.is_admin and owner_id != user.id:
        raise Forbidden(
            f"{kind} {item_id} is shared with every account: members can use it; "
            "only an admin can change or delete it",
            **{f"{kind}_id": item_id},
        )


def visible(user: User | None, kind: Kind, owner_column: Any) -> ColumnElement[bool]:
    """The SQL filter for the objects of `kind` that `user` may see."""
    if user is None or user.is_admin:
        return true()
    if kind in SHAREABLE:
        return or_(owner_column == user.id, owner_column.is_(None))
    return owner_column == user.id  # type: ignore[no-any-return]


def owned_tables() -> list[Any]:
    """Every table with an `owner_id`: what an account can own."""
    from lastedocation.datasets.models import Dataset
    from lastedocation.models.entries import ModelEntry
    from lastedocation.runs.models import Run
    from lastedocation.speech.entries import Transcription

    return [Dataset, Run, ModelEntry, Transcription]


def hand_over(session: Session, *, from_user_id: int, to_user_id: int) -> dict[str, int]:
    """Give everything `from_user_id` owns to `to_user_id` (not committed); the counts."""
    counts: dict[str, int] = {}
    for table in owned_tables():
        result = session.execute(
            update(table).where(table.owner_id == from_user_id).values(owner_id=to_user_id)
        )
        counts[table.__tablename__] = int(result.rowcount)  # type: ignore[attr-defined]
    return counts


def owner_names(session: Session, owner_ids: set[int | None]) -> dict[int | None, str]:
    """Usernames to show for owners (no internal ids in answers); None is "studio"."""
    ids = {i for i in owner_ids if i is not None}
    names: dict[int | None, str] = {None: "studio"}
    query = select(User.id, User.username).where(User.id.in_(ids))
    for user_id, name in session.execute(query) if ids else []:
        names[user_id] = name
    return names


def delete_owned(
    session: Session, settings: Settings, *, user_id: int, cache: ModelCache | None = None
) -> dict[str, int]:
    """Delete everything `user_id` owns, for an admin who asks for that instead of the
    hand-over: runs first (refused, with nothing deleted, while one of them trains),
    then models (unloaded from the chat cache), then datasets. The counts."""
    from lastedocation.datasets.models import Dataset
    from lastedocation.datasets.service import delete_dataset
    from lastedocation.models.entries import ModelEntry
    from lastedocation.models.registry import delete_model
    from lastedocation.runs.models import Run
    from lastedocation.runs.service import delete_run
    from lastedocation.runs.states import ALLOWED

    runs = list(session.scalars(select(Run).where(Run.owner_id == user_id)))
    busy = [run.id for run in runs if run.state not in ALLOWED["delete"]]
    if busy:
        raise Conflict(
            f"the account's run(s) {', '.join(map(str, busy))} are training: stop them first",
            runs=busy,
        )
    from lastedocation.speech.transcriptions import delete_owned_transcriptions

    transcriptions = delete_owned_transcriptions(session, settings, user_id=user_id)
    for run in runs:
        delete_run(session=session, settings=settings, run=run)
    models = list(session.scalars(select(ModelEntry).where(ModelEntry.owner_id == user_id)))
    for entry in models:
        delete_model(session=session, settings=settings, entry=entry, cache=cache)
    datasets = list(session.scalars(select(Dataset).where(Dataset.owner_id == user_id)))
    for dataset in datasets:
        delete_dataset(session=session, settings=settings, dataset=dataset)
    return {
        "runs": len(runs),
        "models": len(models),
        "datasets": len(datasets),
        "transcriptions": transcriptions,
    }
