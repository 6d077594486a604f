"""Code shared by the tests, imported as ``tests.helpers.<module>``: the authors' reference network
(authors_reference), the bad-input checks (bad_input_checks), the CTC rules (ctc_checks), test
images (io_fixtures), a local-rule model (local_rule_model), shapes, tiny training set-ups
(tiny_training), the docks driven in a viewer (docks, finetune_dock), the subprocess that closes a
viewer at once (close_at_once) and the fixtures every folder shares (fixtures, loaded by
``tests/conftest.py``). No test lives here."""
