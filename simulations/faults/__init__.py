"""The fault harness over real node processes (issue 16), after Jepsen and Maelstrom.

Real ``parley node run`` processes, each in its own network namespace (`netns`), with a trio
fault proxy in front of every libp2p port (`proxy`); faults on a seeded schedule (`schedule`);
one client per node recording every operation into a history (`run`); a pure checker over that
history (`checker`); and a plot (`plot`). ``parley faults run`` is the command.
"""
