"""Long messages sent in parts (concatenated MO): each part kept in Redis, the whole message
made when the last one arrives, for any kind whose adapter reports a :class:`MessagePart`.

Parts arrive in any order and possibly more than once, each its own webhook with its own
provider id. Each is kept (for ``PART_TTL``) and acknowledged; the part that completes the set
turns into one message, named by the first part's id, and takes the normal path (stored, then
acknowledged). A part resent after that gives the same message again, which storage sees as the
duplicate it is. A reference the sender's phone reuses for a new message starts afresh.
"""

from __future__ import annotations

import json

from redis import Redis

from citizen_lookup.exceptions import MalformedPayload
from citizen_lookup.providers.messages import InboundMessage, MessagePart

PART_TTL = 3600  # seconds a part waits for the rest of its message


def reassemble(
    redis: Redis, prefix: str, kind: str, connection: str, part: MessagePart
) -> InboundMessage | None:
    """The whole message once ``part`` completes it; None while parts are missing.

    Raises ``RedisError`` when the part cannot be kept (the provider must send it again), and
    :class:`MalformedPayload` when the joined text is longer than the kind allows.
    """
    message = part.message
    key = f"{prefix}:{kind}-parts:{connection}:{message.sender}:{part.ref}:{part.total}"
    value = json.dumps([message.provider_message_id, message.text])
    kept, done = redis.hmget(key, [str(part.number), "done"])
    if done is not None and kept is not None and json.loads(kept)[0] != message.provider_message_id:
        redis.delete(key)  # the sender's phone reused the reference for a new message
    pipe = redis.pipeline(transaction=True)
    pipe.hset(key, str(part.number), value)
    pipe.expire(key, PART_TTL)
    pipe.hgetall(key)
    stored: dict[bytes, bytes] = pipe.execute()[-1]
    done = stored.pop(b"done", None)
    parts = {int(number): json.loads(kept_part) for number, kept_part in stored.items()}
    if done is None and set(parts) != set(range(1, part.total + 1)):
        return None
    text = "".join(parts[number][1] for number in range(1, part.total + 1))
    whole_id = parts[1][0]
    if done is None:
        redis.hset(key, "done", whole_id)
    if len(text) > part.max_length:
        raise MalformedPayload(f"the joined message is longer than {part.max_length} characters")
    return InboundMessage(
        provider_message_id=whole_id, sender=message.sender, recipient=message.recipient, text=text
    )
