"""Attack replay: hostile vendor models, the vendor's view of the hub, and one decoder per channel.

``models`` builds ordinary ``python_package`` submissions that choose what they do from the
private features they are given; ``vendor_view`` is the only code that reads the hub's vendor
API; ``decoders`` turn what that view shows back into secret bits; ``scoring`` counts them.
"""
