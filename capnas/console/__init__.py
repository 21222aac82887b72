"""The chat console behind `capnas chat`: a person describes what they need, confirms the task the planner
drafted, and watches (and steers) the run while it goes.

    taskform   the task as a table; `key=value` edits
    keys       line input: a cbreak terminal reader (the live view draws the line) or plain stdin lines
    runthread  the run in a background thread; its interrupts handed to the person
    dashboard  what the live view shows, built from the run's events and the journal
    ask        a question about the run, answered by the critic's model from the journal's numbers
    session    the loop tying them together, and the slash commands
"""

from capnas.console.session import ChatSession

__all__ = ["ChatSession"]
