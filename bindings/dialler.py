"""The node's outbound campaigns: contacts dialled through the call layer, paced, their results kept.

Each ``[[campaigns]]`` section is one ``core.scheduler.campaign.Campaign`` (its contacts, attempts and
do-not-call list in LMDB through ``bindings.campaigns.CampaignStore``) and, unless it is a preview
campaign, one ``core.scheduler.pacing.Pacer``. A campaign the node has never run starts with the node; a
paused or stopped one stays so (its state is stored).

Every ``TICK`` seconds (and after a call ends) the dialler:
1. tells each pacer which of its queue's agents are free, busy or gone (the ACD's agent states; an
   agent with no phone registered is gone: the ACD cannot ring them);
2. asks it how many calls to start (``decide``), takes that many dials from the store — each attempt is
   on disk as "dialling" before its INVITE leaves (write-ahead: nobody is dialled twice, even across a
   crash) — and has the call layer place them (``B2BUA.originate``: answered calls go to the campaign's
   queue, where the ACD hands them to an agent with the contact's ids in the INVITE);
3. acts on the pacer's ``CallAbandoned`` (a live answer with no agent within ``connect_limit``): the call
   leaves the queue, hears the campaign's message, is hung up, and is logged ("exit" with reason
   "abandoned" in the queue log, "abandoned" in the campaign's results and in the call's record);
4. commits what changed (results are committed here in groups; the attempt itself already was).

A preview campaign paces nothing: every tick, each free agent of its queue with a phone registered
and no preview on it is shown the next contact — the switch rings the agent's phone with the contact's
name and number as the From's display-name and the campaign's and contact's ids in X-Campaign and
X-Contact (``B2BUA.originate`` with ``user``). Answering starts the call: the attempt is written
(``CampaignStore.preview_dial``: on disk before its INVITE), then the switch dials the contact through
the trunk with the campaign's caller ID and bridges the two (``B2BUA.send``); the attempt's result is the
contact leg's. Declining (busy, 603) skips the contact to the end of the list; not answering gives it
back its place and counts a miss — ``max_no_answer`` misses in a row put the agent on break with reason
"no_answer", as a missed queue call would.

The node hands it the call layer's events: ``LiveAnswer`` (an outbound call answered by a person — after
the answering-machine detector, when the campaign has ``amd`` — the pacer's CallAnswered: the 2-second
clock starts there), a queue-log "answer" (it reached an agent: CallConnected), ``CallSummary`` (the
call's result for the campaign and, if it was never answered, the pacer's CallFailed).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bindings.campaigns import CampaignStore
from core.acd import model as acd_model
from core.acd.log import QueueLogEntry
from core.call.b2bua import B2BUA, CallSummary, LiveAnswer
from core.config import Config
from core.scheduler import pacing
from core.scheduler.campaign import NEW, RUNNING, Campaign, CampaignError, Dial, pacing_config

__all__ = ["CampaignFileError", "Dialler", "TICK", "campaign_result", "preview_result"]

log = logging.getLogger("switchcore.campaigns")

TICK = 0.25  # seconds between pacing decisions


def campaign_result(summary: CallSummary, abandoned: bool) -> str:
    """What a finished call means for its contact (core.scheduler.campaign.RESULTS)."""
    if summary.amd == "machine":
        return "machine"
    if summary.answered_at is not None:
        if abandoned or (summary.segments and not summary.agent):
            return "abandoned"  # no agent took it: the 2-second rule, or the contact gave up waiting
        return "answered"
    if summary.disposition == "busy":
        return "busy"
    if summary.disposition == "no answer":
        return "no_answer"
    return _failure(summary.leg_b_status or summary.status)


def preview_result(summary: CallSummary) -> str:
    """What a preview call means for its contact: the agent answered first, so it is the contact
    leg's (leg B's) outcome."""
    if summary.leg_b_answered_at is not None:
        return "answered"
    return _failure(summary.leg_b_status)


def _failure(status: int) -> str:
    """A call that was never answered, by the final status its far end (or the switch) gave."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    if status in (404, 484, 604):
        return "invalid"
    if status in (403, 603):
        return "rejected"
    return "failed"


class CampaignFileError(Exception):
    """A campaign's contacts or do-not-call file cannot be read: one line naming the key and the file."""


class _Run:
    __slots__ = ("config", "campaign", "pacer", "agents", "known")

    def __init__(self, config, campaign: Campaign, pacer: pacing.Pacer | None, agents: list[str]):
        self.config = config
        self.campaign = campaign
        self.pacer = pacer
        self.agents = agents  # the agents of the campaign's queue
        self.known: dict[str, str] = {}  # agent -> "free" / "busy" / "gone", as last told to the pacer


class Dialler:
    def __init__(self, config: Config, storage, calls: B2BUA, now: float, *, base: str | Path = "."):
        self.config = config
        self.calls = calls
        self.store = CampaignStore(storage)
        self.dnc = self.store.load_dnc()
        self.runs: dict[str, _Run] = {}
        self.dials: dict[str, tuple[_Run, Dial]] = {}  # call id -> the dial it places
        self.abandoned: set[str] = set()
        self.previews: dict[str, tuple[_Run, str]] = {}  # call id -> the preview on an agent's phone
        self.previewing: set[str] = set()  # agents with a preview on their phone
        self.misses: dict[str, int] = {}  # agent -> previews not answered in a row
        self.last: dict[str, tuple[_Run, Dial]] = {}  # agent -> the campaign call they had last
        calls.on_disposition = self.disposition
        self.launched = 0
        for i, cfg in enumerate(config.campaigns):
            try:
                campaign, problems = self.store.open(cfg, self.dnc, now, base=base)
            except OSError as exc:
                key = "dnc" if cfg.dnc and exc.filename and str(exc.filename).endswith(cfg.dnc) else "contacts"
                raise CampaignFileError(f"campaigns[{i}].{key}: {exc.filename}: {exc.strerror}") from None
            for problem in problems[:20]:
                log.warning("campaign %s: line %s kept out: %s", cfg.name, problem.line, problem.reason)
            if len(problems) > 20:
                log.warning("campaign %s: %d rows kept out in all", cfg.name, len(problems))
            if campaign.state == NEW:
                campaign.start(now)
                self.store.commit(campaign)
            pacer = pacing.Pacer(pacing_config(cfg)) if cfg.mode != "preview" else None
            self.runs[cfg.name] = _Run(cfg, campaign, pacer, self._queue_agents(cfg.queue))
            log.info("campaign %s: %s, %d contacts pending", cfg.name, campaign.state, campaign.pending())

    def _queue_agents(self, queue: str) -> list[str]:
        q = self.config.queue(queue)
        names = [t.agent for t in q.agents]
        groups = {g.group for g in q.groups}
        names += [a.id for a in self.config.agents if groups & set(a.groups) and a.id not in names]
        return names

    # -- the tick ---------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        # The call layer starts its ACD (agents configured "available" log in, phones registered
        # before the start are known) and takes queued registrations only when it processes: on a
        # node no one has called yet, the agents would otherwise stay logged out and a progressive
        # campaign would never dial.
        self.calls.process(now)
        for run in self.runs.values():
            pacer = run.pacer
            if pacer is not None:
                self._agents(run, now)
                pacer.handle_timer(now)
                while (gone := pacer.next_event()) is not None:
                    self._abandon(run, gone, now)
            if run.campaign.state == RUNNING and pacer is not None:
                wanted = pacer.decide(now)
                if wanted > 0:
                    for dial in self.store.next_dials(run.campaign, now, wanted):
                        self._place(run, dial, now)
            elif run.campaign.state == RUNNING:
                self._show_previews(run, now)
            self.store.commit(run.campaign)

    def _agents(self, run: _Run, now: float) -> None:
        for agent in run.agents:
            state = self._agent_state(agent, self._phone(agent, now), now)
            if run.known.get(agent) != state:
                run.known[agent] = state
                event = {"free": pacing.AgentFree, "busy": pacing.AgentBusy, "gone": pacing.AgentLoggedOut}[state]
                run.pacer.handle(event(agent), now)

    def _agent_state(self, agent: str, phone: str | None, now: float) -> str:
        """"free", "busy" or "gone", as the ACD sees the agent now and given the agent's registered
        ``phone`` (``_phone``)."""
        stats = self.calls.acd.agent_stats(agent, now)
        if stats.status == acd_model.LOGGED_OUT or phone is None:
            # No phone registered: the ACD cannot ring the agent (its "free agent" needs one), so
            # a call dialled for them would wait and be abandoned.
            return "gone"
        if stats.state == acd_model.IDLE and stats.status == acd_model.AVAILABLE:
            return "free"
        if stats.state == acd_model.IDLE:
            return "gone"  # on break
        return "busy"

    def _phone(self, agent: str, now: float) -> str | None:
        """The first of the agent's phones registered now, None when none is."""
        cfg = self.config.agent(agent)
        registrar = self.calls.registrar
        return next((phone for phone in cfg.phones if registrar.lookup(phone, now)), None) if cfg else None

    # -- preview mode ---------------------------------------------------------------------------------
    def _show_previews(self, run: _Run, now: float) -> None:
        for agent in run.agents:
            if agent in self.previewing:
                continue
            phone = self._phone(agent, now)
            if self._agent_state(agent, phone, now) != "free":
                continue
            shown = run.campaign.preview(agent, now)
            if shown is None:
                return  # nobody is due
            contact = shown.contact
            call_id = self.calls.originate(
                contact.phone, now, user=phone, target=None, caller_id=run.config.caller_id,
                display=f"{contact.name} {contact.phone}".strip(), agent=agent,
                ring_timeout=self.config.queue(run.config.queue).ring_timeout, campaign_id=run.config.name,
                contact_id=contact.id)
            if call_id is None:
                run.campaign.preview_release(agent, now)  # no channel or port now: next tick
                return
            self.previews[call_id] = (run, agent)
            self.previewing.add(agent)

    def _preview_started(self, call_id: str, now: float) -> None:
        """The agent answered the preview: the attempt goes on disk, then the contact is dialled."""
        run, agent = self.previews[call_id]
        self.misses.pop(agent, None)
        dial = self.store.preview_dial(run.campaign, agent, now)
        if dial is None:
            # On the DNC list or outside its window since it was shown: a tone, and the agent is free.
            self.calls.send(call_id, "prompt:beep", now)
            return
        self.dials[call_id] = self.last[agent] = (run, dial)
        self.launched += 1
        self.calls.send(call_id, f"trunk:{dial.trunk}/{dial.number}", now, ring_timeout=dial.max_ring)

    def _preview_ended(self, summary: CallSummary, now: float) -> None:
        run, agent = self.previews.pop(summary.call_id)
        self.previewing.discard(agent)
        found = self.dials.pop(summary.call_id, None)
        if found is not None:
            try:
                run.campaign.result(found[1].id, preview_result(summary), now, agent=agent)
            except CampaignError as exc:
                log.error("campaign %s: result of %s not taken: %s", run.config.name, found[1].id, exc)
        elif summary.answered_at is not None:
            return  # answered, but the contact could no longer be dialled: preview_dial closed it
        elif summary.disposition in ("busy", "rejected"):
            run.campaign.preview_skip(agent, now)  # the agent declined it
        else:
            run.campaign.preview_release(agent, now)
            misses = self.misses[agent] = self.misses.get(agent, 0) + 1
            cfg = self.config.agent(agent)
            if cfg is not None and 0 < cfg.max_no_answer <= misses:
                self.misses.pop(agent)
                log.warning("campaign %s: agent %s missed %d previews: on break", run.config.name, agent, misses)
                self.calls.agent_status(agent, acd_model.ON_BREAK, acd_model.PAUSE_NO_ANSWER, now)

    def _place(self, run: _Run, dial: Dial, now: float) -> None:
        call_id = self.calls.originate(
            dial.number, now, trunk=dial.trunk, target=f"queue:{dial.queue}", caller_id=dial.caller_id,
            ring_timeout=dial.max_ring, campaign_id=dial.campaign, contact_id=dial.contact.id,
            amd=run.config.amd)
        if call_id is None:
            # No channel or port: the attempt is closed as failed (its retry rule applies).
            run.campaign.result(dial.id, "failed", now)
            return
        self.dials[call_id] = (run, dial)
        self.launched += 1
        if run.pacer is not None:
            run.pacer.handle(pacing.CallDialled(call_id), now)

    def _abandon(self, run: _Run, event: pacing.CallAbandoned, now: float) -> None:
        if self.calls.abandon(event.call, run.config.abandon_message, now):
            self.abandoned.add(event.call)
            log.warning("campaign %s: call %s abandoned after %.1f s without an agent", run.config.name,
                        event.call, now - event.answered_at)

    # -- the call layer's events ----------------------------------------------------------------------
    def on_event(self, event: Any, now: float) -> None:
        if isinstance(event, LiveAnswer):
            if event.call_id in self.previews:
                self._preview_started(event.call_id, now)
                return
            found = self.dials.get(event.call_id)
            if found is not None and found[0].pacer is not None:
                found[0].pacer.handle(pacing.CallAnswered(event.call_id), now)
        elif isinstance(event, QueueLogEntry):
            if event.kind == "answer":
                found = self.dials.get(event.member)
                if found is not None:
                    self.last[event.agent] = found
                if found is not None and found[0].pacer is not None:
                    found[0].pacer.handle(pacing.CallConnected(event.member, event.agent), now)
        elif isinstance(event, CallSummary):
            if event.call_id in self.previews:
                self._preview_ended(event, now)
                return
            found = self.dials.pop(event.call_id, None)
            if found is None:
                return
            run, dial = found
            abandoned = event.call_id in self.abandoned
            self.abandoned.discard(event.call_id)
            result = campaign_result(event, abandoned)
            if run.pacer is not None and event.answered_at is None:
                run.pacer.handle(pacing.CallFailed(event.call_id, result.replace("_", "-")), now)
            elif run.pacer is not None:
                run.pacer.handle(pacing.CallFailed(event.call_id, result), now)  # left the waiting line
            try:
                run.campaign.result(dial.id, result, now, agent=event.agent)
            except CampaignError as exc:
                log.error("campaign %s: result of %s not taken: %s", run.config.name, dial.id, exc)

    def shown(self, agent: str):
        """The preview on ``agent``'s phone (``core.scheduler.campaign.Preview``), None when none is."""
        return next((p for run in self.runs.values() if (p := run.campaign.shown(agent)) is not None), None)

    def disposition(self, agent: str, code: str, now: float, at: float | None = None) -> bool:
        """The agent's disposition code for the last campaign call they had (the [acd] disposition
        feature code, or the control API with ``at``, the time a "callback" was asked for): on the
        attempt at once (a "dnc" also on the do-not-call list). False when the agent has had no
        campaign call since the node started."""
        found = self.last.get(agent)
        if found is None:
            return False
        run, dial = found
        try:
            self.store.result(run.campaign, dial.id, "disposition", now, disposition=code, agent=agent, at=at)
        except CampaignError as exc:
            log.error("campaign %s: disposition %s of %s not taken: %s", run.config.name, code, dial.id, exc)
            return False
        log.info("campaign %s: agent %s gave %s the disposition %s", run.config.name, agent, dial.id, code)
        return True

    def stop(self, now: float) -> None:
        for run in self.runs.values():
            self.store.commit(run.campaign)
