"""Report how much space Django sessions take, and which keys take it."""
