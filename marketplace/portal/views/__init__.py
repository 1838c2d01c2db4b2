"""Server-rendered pages. Each view parses its input, makes one funnel/selector/service call and
renders; the rules live in the domain apps, exactly as for the REST API."""
