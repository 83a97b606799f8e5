"""Replication between nodes through NATS JetStream (``docs/scale-out.md``).

Layout::

    subjects.py  channels as subjects, the stream layout, the message id of a log entry
    partitions.py  the partition token of subject mapping version 2, partition sets
    outbox.py    the log as the outbox: publish past the durable marks (eager, or lazy batches),
                 raise them after the PubAck
    consumer.py  one stream's messages into the replica, through the peers' apply path
    consuming.py the node's durable consumers: bound per session, read, caught up
    standing.py  a pull request kept standing on the server: batches without a fetch each
    gaps.py      where a stream dropped entries before this node's consumer received them
    states.py    document states over the bus for a node behind its stream (request/reply)
    pull.py      pull since a version vector over the bus (signed request/reply)
    requests.py  signed requests between nodes, their rate per verified node, refusals
    fold.py      a stream purged behind every node's consumer (the compaction lease for the idle)
    erase.py     a forgotten memory's messages replaced by stubs
    publisher.py the loops that publish the outbox and the erasures, with retries
    serving.py   states and pull requests answered for other nodes; needs filled from theirs
    settings.py  BusSettings, the durable consumer's name
    cancel.py    a cancelled task told apart from a failed nats-py call
    client.py    the session lifecycle: connect, streams, start the rest, reconnect; pull, fold
"""

from .client import BusClient
from .settings import BusSettings, consumer_name
from .subjects import Layout, StreamSpec, channel_of, default_streams, message_id

__all__ = [
    "BusClient",
    "BusSettings",
    "Layout",
    "StreamSpec",
    "channel_of",
    "consumer_name",
    "default_streams",
    "message_id",
]
