"""What the daemon tells people and systems: the event journal (`journal`, `reader`), events
from decisions (`decisions`), episodes and history (`history`), the last known originals
(`originals`), the signed webhook outbox (`webhook`), notifications through Apprise (`notify`),
the status page (`page`) and the wiring of them all (`hub`)."""
