"""An IVR menu as one caller goes through it: play the prompt, collect DTMF digits, decide. Sans-IO.

The call layer drives a ``MenuRun`` with what happens on the caller's leg — the prompt has finished
playing (``prompt_done``), a digit arrived (``digit``: an RFC 4733 telephone-event the media engine
detected, or a SIP INFO), the run's deadline passed (``timer``) — and each returns what to do next:
``Play(prompt)``, ``StopPrompt()`` (the caller barged in with a digit), ``Route(target)`` (a target of
the config: "user:…", "trunk:…", "queue:…", "ivr:…", "hangup") or nothing. ``deadline`` is the time the
run wants ``timer`` called, None when it waits for the prompt to end.

The rules (what Asterisk's Background/WaitExten and FreeSWITCH's ivr menus do):
- digits may come while the prompt plays (barge-in): the prompt stops, the entry goes on;
- the entry ends at ``max_digits`` digits, at the terminator, or ``inter_digit`` seconds after the last
  digit; no digit within ``timeout`` seconds of the prompt's end is a timeout;
- an entry that matches no choice, or a timeout, replays the prompt (after ``invalid_prompt`` for a
  wrong choice) up to ``retries`` times; then the call goes to ``on_invalid`` or ``on_timeout``.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.config import Menu

__all__ = ["MenuRun", "Play", "StopPrompt", "Route"]


@dataclass(slots=True, frozen=True)
class Play:
    prompt: str  # a prompt as the config names it (core.config.parse_prompt)


@dataclass(slots=True, frozen=True)
class StopPrompt:
    pass


@dataclass(slots=True, frozen=True)
class Route:
    target: str
    digits: str  # the entry that chose it ("" after a timeout)


class MenuRun:
    """One caller in one menu; see the module's description."""

    __slots__ = ("menu", "digits", "tries", "playing", "deadline", "entered")

    def __init__(self, menu: Menu):
        self.menu = menu
        self.digits = ""
        self.tries = 0  # prompts replayed so far
        self.playing = False
        self.deadline: float | None = None
        self.entered = ""  # every digit of this run, for the call's record

    def start(self, now: float) -> list:
        self.playing = True
        self.deadline = None
        return [Play(self.menu.prompt)]

    def prompt_done(self, now: float) -> list:
        """The prompt finished playing (or could not be played): the caller's turn."""
        if not self.playing:
            return []
        self.playing = False
        if self.deadline is None:
            self.deadline = now + (self.menu.inter_digit if self.digits else self.menu.timeout)
        return []

    def digit(self, digit: str, now: float) -> list:
        self.entered += digit
        actions: list = []
        if self.playing:
            self.playing = False
            actions.append(StopPrompt())
        if digit == self.menu.terminator and self.menu.terminator:
            return actions + self._decide(now)
        self.digits += digit
        if len(self.digits) >= self.menu.max_digits:
            return actions + self._decide(now)
        self.deadline = now + self.menu.inter_digit
        return actions

    def timer(self, now: float) -> list:
        if self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        if self.digits:
            return self._decide(now)
        return self._again(now, invalid=False)

    def _decide(self, now: float) -> list:
        digits, self.digits = self.digits, ""
        self.deadline = None
        target = self.menu.choices.get(digits)
        if target is not None:
            return [Route(target, digits)]
        return self._again(now, invalid=True)

    def _again(self, now: float, *, invalid: bool) -> list:
        menu = self.menu
        if self.tries >= menu.retries:
            target = (menu.on_invalid or menu.on_timeout) if invalid else menu.on_timeout
            return [Route(target, "")]
        self.tries += 1
        self.playing = True
        self.deadline = None
        if invalid and menu.invalid_prompt:
            # The invalid prompt, then the menu's own: played one after the other.
            return [Play(menu.invalid_prompt), Play(menu.prompt)]
        return [Play(menu.prompt)]
