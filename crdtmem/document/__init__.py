"""A memory as a Yrs document: its layout (:mod:`.memory`), the Yrs roots it is made of (:mod:`.yroots`),
the plain records read from it (:mod:`.records`) and state-vector helpers (:mod:`.statevector`)."""
