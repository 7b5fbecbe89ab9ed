"""Car models behind `ingest.simulator`: one module per profile (``seed``, ``fleet``).

A model owns the fleet's state and advances it one reading at a time; the simulator turns
what it returns (a :class:`~ingest.cars.common.Step`) into a ``ReadingBatch``.
"""
