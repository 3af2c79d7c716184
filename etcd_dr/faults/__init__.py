"""Fault injection for rehearsals: plan.py (pure: the fault's plan, FaultAction and its params),
steps.py (the handlers, on the lab's power and cable or over SSH), the ledger of what is injected."""
