"""Notifications through Apprise URLs or a Prefect notification block. Failures never stop a rollout."""

from __future__ import annotations

import logging

from aksmaint.params import NotifyOptions

log = logging.getLogger(__name__)


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def render(template: str, **values: object) -> str:
    return template.format_map(_Defaults({k: str(v) for k, v in values.items()}))


def send(options: NotifyOptions, template: str, **values: object) -> None:
    if not options.urls and not options.block:
        return
    body = render(template, **values)
    if options.urls:
        import apprise

        sender = apprise.Apprise()
        for url in options.urls:
            sender.add(url.get_secret_value())
        try:
            if not sender.notify(body=body, title="AKS node maintenance"):
                log.warning(
                    "A notification was not delivered to every one of the %d URL(s)", len(options.urls)
                )
        except Exception as exc:  # never leak the URL: it holds the webhook secret
            log.warning("Notification failed: %s", type(exc).__name__)
    if options.block:
        from prefect.blocks.core import Block
        from prefect.blocks.notifications import NotificationBlock

        try:
            # a block is loaded by "<block type slug>/<name>"; NotificationBlock.load would look for
            # the name under the base class's own type and never find it
            block = Block.load(options.block)
            if not isinstance(block, NotificationBlock):
                raise TypeError(f"{type(block).__name__} is not a notification block")
            # Prefect declares NotificationBlock.notify async, but its blocks dispatch on the caller:
            # from sync code, as here, the notification is sent at once and None is returned
            block.notify(body, subject="AKS node maintenance")  # type: ignore[unused-coroutine]
        except Exception as exc:
            log.warning("Notification block %r failed: %s", options.block, _failure(exc))


def _failure(exc: Exception) -> str:
    """Why a block failed, for the log: the message only where it cannot hold the block's secrets."""
    if isinstance(exc, (TypeError, ValueError)):  # not found, wrong type: messages name the block only
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
