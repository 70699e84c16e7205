"""The wire protocol, sans I/O: names, frames, codes and the JSON codec.

Nothing here imports asyncio or any other part of Parley, so every rule of
PROTOCOL.md can be tested with literal strings and bytes.
"""
