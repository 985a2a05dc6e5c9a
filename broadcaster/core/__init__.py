"""The values every layer shares: ids, messages and publications, the event-stream
encoding, channel names, and the resume decision with its replays."""
