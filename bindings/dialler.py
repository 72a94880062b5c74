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

__all__ = ["CampaignFileError", "Dialler", "TICK", "campaign_result"]

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
    status = summary.leg_b_status or summary.status
    if summary.disposition == "busy":
        return "busy"
    if summary.disposition == "no answer":
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
            self.store.commit(run.campaign)

    def _agents(self, run: _Run, now: float) -> None:
        acd = self.calls.acd
        for agent in run.agents:
            stats = acd.agent_stats(agent, now)
            if stats.status == acd_model.LOGGED_OUT or not self._reachable(agent, now):
                # No phone registered: the ACD cannot ring the agent (its "free agent" needs one), so
                # a call dialled for them would wait and be abandoned.
                state = "gone"
            elif stats.state == acd_model.IDLE and stats.status == acd_model.AVAILABLE:
                state = "free"
            elif stats.state == acd_model.IDLE:
                state = "gone"  # on break
            else:
                state = "busy"
            if run.known.get(agent) != state:
                run.known[agent] = state
                event = {"free": pacing.AgentFree, "busy": pacing.AgentBusy, "gone": pacing.AgentLoggedOut}[state]
                run.pacer.handle(event(agent), now)

    def _reachable(self, agent: str, now: float) -> bool:
        """Whether one of the agent's phones is registered now."""
        cfg = self.config.agent(agent)
        registrar = self.calls.registrar
        return cfg is not None and any(registrar.lookup(phone, now) for phone in cfg.phones)

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
            found = self.dials.get(event.call_id)
            if found is not None and found[0].pacer is not None:
                found[0].pacer.handle(pacing.CallAnswered(event.call_id), now)
        elif isinstance(event, QueueLogEntry):
            if event.kind == "answer":
                found = self.dials.get(event.member)
                if found is not None and found[0].pacer is not None:
                    found[0].pacer.handle(pacing.CallConnected(event.member, event.agent), now)
        elif isinstance(event, CallSummary):
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

    def stop(self, now: float) -> None:
        for run in self.runs.values():
            self.store.commit(run.campaign)
