"""A real worker whose JSON sources fail once the way a careless client library does: quoting a URL whole.

`celery -A tests.pipeline.secret_quoting_worker worker` is the product's worker (kasparro.worker) with two
additions for tests/pipeline/test_retry_secrets.py: while the file QUOTING_FLAG exists, a JSON source's read
raises a transient error whose text is QUOTED_ERROR (removing the file first, unless it says "always"); and
every task message the worker publishes (a retry is one) is appended, as JSON, to PUBLISHED_LOG.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from celery.signals import before_task_publish

from kasparro.errors import TransientSourceError
from kasparro.sources import KINDS, _import_kinds
from kasparro.worker import app  # noqa: F401 - the product's worker app, signals and all

_import_kinds()
_JSON = KINDS["json"]


class SecretQuotingJson(_JSON):  # type: ignore[misc, valid-type]
    """A JSON file source whose first read fails with an error quoting a URL, password and key included."""

    def pages(self, cursor: Mapping[str, Any] | None, page_size: int, **options: Any) -> Iterator[Any]:
        """Fail while the flag file exists (once, unless it says "always"), then read the file."""
        flag = Path(os.environ["QUOTING_FLAG"])
        try:
            if flag.read_text() != "always":
                flag.unlink()
        except FileNotFoundError:
            yield from super().pages(cursor, page_size, **options)
            return
        raise TransientSourceError(os.environ["QUOTED_ERROR"], source=self.name)


KINDS["json"] = SecretQuotingJson


@before_task_publish.connect
def _keep_published(sender: str | None = None, body: Any = None, **_: Any) -> None:
    kwargs = body[1] if isinstance(body, (list, tuple)) else (body or {}).get("kwargs")
    with open(os.environ["PUBLISHED_LOG"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"task": sender, "kwargs": kwargs}) + "\n")
