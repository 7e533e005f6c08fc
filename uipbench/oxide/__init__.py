"""The '8' Cu oxide on Cu(111): references, search minima, DFT points and the surface phase diagram.

* :mod:`.references` – the reference structures of the thermodynamics (bulk Cu at the protocol's lattice
  constant, an O2 bond scan, a Cu2O lattice scan), their labelling plan and their energies;
* :mod:`.phase` – ΔG(Δμ_O) of each composition, the winner per Δμ_O interval, the Δμ_O range (pure);
* :mod:`.searches` – the minima of finished raw-backbone searches, pooled per problem, and their DFT points;
* :mod:`.labelling` – labelling the references and the best minima into ``datasets/cu-o/`` (GPAW, resumable);
* :mod:`.diagram` – the phase diagram of one backbone against DFT: tables, ``phases.json``;
* :mod:`.report` – the figure and the Markdown/HTML section;
* :mod:`.run` – ``uipbench oxide phase-diagram`` (the command line: :mod:`uipbench.cli.oxide`).
"""
