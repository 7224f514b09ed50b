"""Response bodies to records: the sinks that parse each operation's answer into Arrow."""
