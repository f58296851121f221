"""Twenty concurrent logins against a real gunicorn leave its threads to other requests."""

import threading
import time

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User

from tests import live

PASSWORD = "correct horse battery staple"


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_logins_are_capped_and_a_metadata_request_still_answers() -> None:
    # The real hash (the server's default hasher): the cost the cap exists for.
    hashed = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    User.objects.create(username="robot", password=hashed)
    answers: list[int] = []
    lock = threading.Lock()

    with live.gunicorn(workers=1, QUAY_GEO_PASSWORD_CHECKS_PER_PROCESS="2") as url:

        def login() -> None:
            response = requests.get(f"{url}/v2/auth", auth=("robot", PASSWORD), timeout=120)
            with lock:
                answers.append(response.status_code)

        logins = [threading.Thread(target=login) for _ in range(20)]
        for thread in logins:
            thread.start()
        started = time.monotonic()
        metadata = requests.get(f"{url}/v2/", timeout=120)
        metadata_seconds = time.monotonic() - started
        for thread in logins:
            thread.join(timeout=180)

    print(f"metadata answered in {metadata_seconds:.2f} s; logins: {sorted(answers)}")
    assert metadata.status_code == 401  # answered, with its challenge
    assert len(answers) == 20
    assert set(answers) <= {200, 429}
    assert answers.count(200) >= 1
    assert answers.count(429) >= 1  # refused at once by the cap, not queued behind the hashes
