"""The explorer's first-page anchors against the real MongoDB-wire server: learned once per
order (also by a background warm-up), then used, and never learned twice at the same time."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pymongo import monitoring

from fleet import clients
from fleet.settings import Settings
from twin import store
from ui import anchors
from ui.twin_reads import TableQuery

pytestmark = pytest.mark.integration

Fleet = tuple[Settings, list[dict[str, Any]]]


class FindCounter(monitoring.CommandListener):
    """Counts the `find` commands this client sends, and how many documents they return."""

    def __init__(self) -> None:
        self.finds = 0
        self.lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            with self.lock:
                self.finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def where(settings: Settings) -> anchors.Key:
    return (settings.mongodb_uri, settings.mongodb.database, settings.twin.collection)


def test_learn_anchors_the_default_orders_and_first_pages_read_from_them(fleet: Fleet) -> None:
    settings, twins = fleet
    key = where(settings)
    counter = FindCounter()
    client = clients.mongo_client(settings, event_listeners=[counter])
    collection = store.twins_collection(client[settings.mongodb.database], settings.twin.collection)
    for query in anchors.DEFAULT_ORDERS:
        anchors.ANCHORS.pop(anchors.anchor_key(key, query), None)

    anchors.learn(collection, key)
    learned = {
        q.sort: anchors.ANCHORS.get(anchors.anchor_key(key, q)) for q in anchors.DEFAULT_ORDERS
    }
    ids = sorted(t["_id"] for t in twins)
    assert learned["car id"] == (ids[49], ids[49])
    assert all(learned.values()), learned

    # A first page by id is now the range up to the anchor: one find, the 50 cars.
    before = counter.finds
    rows, last = anchors.first_page(collection, key, TableQuery(), None)
    assert [r["car"] for r in rows] == ids[:50]
    assert last == (ids[49], ids[49])
    assert counter.finds - before == 1
    client.close()


def test_concurrent_first_pages_learn_an_anchor_once(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests for the same unanchored first page: the second waits for the first and
    reads from the anchor it learned (one whole-range read, not two)."""
    settings, _twins = fleet
    key = where(settings)
    query = TableQuery(sort="last seen (oldest first)")
    anchors.ANCHORS.pop(anchors.anchor_key(key, query), None)
    client = clients.mongo_client(settings)
    collection = store.twins_collection(client[settings.mongodb.database], settings.twin.collection)
    used: list[Any] = []
    table_page = anchors.twin_reads.table_page

    def recording(twins: Any, query: TableQuery, clock: Any, anchor: Any = None) -> Any:
        used.append(anchor)
        return table_page(twins, query, clock, anchor)

    monkeypatch.setattr(anchors.twin_reads, "table_page", recording)
    pages: list[Any] = []

    def request() -> None:
        pages.append(anchors.first_page(collection, key, query, None))

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    client.close()
    assert len(pages) == 2 and pages[0] == pages[1]
    assert len(pages[0][0]) == 50
    assert used[0] is None  # the first read had no anchor ...
    assert used[1] == anchors.ANCHORS[anchors.anchor_key(key, query)]  # ... the second had it
