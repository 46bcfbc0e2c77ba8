"""Labelled texts for the sensitive-data and secrets detectors: positives with the kind and the value's span,
benign look-alikes that must stay clean, and `rates` to score a detector on them. Every value is fake (test
card numbers, documented example IBANs and keys) but passes its checksum."""

from __future__ import annotations

from collections.abc import Sequence

from agentgw.guardrails.findings import Detector

# In the literals below ⟦…⟧ marks the value; _load strips the marks and records the span in SPANS[text].
SPANS: dict[str, tuple[int, int]] = {}


def _load(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for marked, kind in items:
        start = marked.index("⟦")
        end = marked.index("⟧") - 1
        text = marked.replace("⟦", "").replace("⟧", "")
        SPANS[text] = (start, end)
        out.append((text, kind))
    return out


_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
_PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"

SENSITIVE_POSITIVES = _load(
    [
        # e-mail, in several languages and shapes
        ("Please write to ⟦jane.doe@example.com⟧ before Friday.", "email"),
        ("Contact: ⟦first.last+tag@mail.example.co.uk⟧", "email"),
        ("Bitte senden Sie die Unterlagen an ⟦max.mustermann@beispiel.de⟧, danke.", "email"),
        ("Écrivez-moi à ⟦marie.dupont@exemple.fr⟧ s'il vous plaît.", "email"),
        ("Mi correo es ⟦juan_perez99@ejemplo.es⟧.", "email"),
        ("連絡先は⟦taro.yamada@example.jp⟧です。", "email"),
        ("请发邮件到⟦zhang.wei@example.cn⟧联系我们。", "email"),
        ("راسلني على ⟦ahmed@example.ae⟧ من فضلك", "email"),
        ('{"user": {"email": "⟦ops-team@corp.example.org⟧"}}', "email"),
        ("<a href='mailto:⟦support@example.io⟧'>mail</a>", "email"),
        # phone: international and national formats
        ("Call me on ⟦+44 20 7946 0958⟧ tomorrow.", "phone"),
        ("Telefon: ⟦+49 30 901820⟧", "phone"),
        ("Office: ⟦+1 (415) 555-2671⟧", "phone"),
        ("US desk ⟦(415) 555-2671⟧, ask for Sam", "phone"),
        ("Hotline ⟦202-555-0143⟧ is open 9-5", "phone"),
        ("London office ⟦020 7946 0958⟧", "phone"),
        ("Tel. ⟦030 901820⟧ (Zentrale)", "phone"),
        ("Appelez le ⟦06 12 34 56 78⟧ ou écrivez-nous.", "phone"),
        ("Téléphone : ⟦+33 1 23 45 67 89⟧", "phone"),
        ("Llámame al ⟦+34 912 345 678⟧ por la tarde.", "phone"),
        ("電話番号は⟦03-1234-5678⟧です", "phone"),
        ("国际电话 ⟦+86 138 0013 8000⟧ 请拨打", "phone"),
        ("اتصل بنا على ⟦+971 4 312 3456⟧", "phone"),
        ("Ufficio ⟦+39 06 1234 5678⟧", "phone"),
        ("Mumbai: ⟦+91 98765 43210⟧", "phone"),
        ("São Paulo ⟦+55 11 91234-5678⟧", "phone"),
        ("Москва ⟦+7 495 123-45-67⟧", "phone"),
        ("dial ⟦+4930901820⟧ now", "phone"),
        # payment cards (test numbers), with spaces, dashes or none
        ("Card: ⟦4111 1111 1111 1111⟧ exp 12/27", "card"),
        ("paid with ⟦5555-5555-5555-4444⟧ yesterday", "card"),
        ("Amex ⟦378282246310005⟧", "card"),
        ("Discover card ⟦6011 1111 1111 1117⟧.", "card"),
        ("JCB ⟦3530 1113 3330 0000⟧", "card"),
        ("Kartennummer ⟦4012 8888 8888 1881⟧, gültig bis 03/28", "card"),
        ("Numéro de carte : ⟦5105 1051 0510 5100⟧", "card"),
        ("tarjeta ⟦2223 0031 2200 3222⟧", "card"),
        ("カード番号 ⟦4000 0566 5566 5556⟧ を登録", "card"),
        ("ref 12 ⟦4111-1111-1111-1111⟧", "card"),
        ("Diners ⟦3056 930902 5904⟧", "card"),
        # IBAN (documented examples; spaces optional)
        ("IBAN: ⟦GB82 WEST 1234 5698 7654 32⟧", "iban"),
        ("Überweisung an ⟦DE89 3704 0044 0532 0130 00⟧ bis Montag", "iban"),
        ("Virement sur ⟦FR14 2004 1010 0505 0001 3M02 606⟧ merci", "iban"),
        ("Cuenta ⟦ES91 2100 0418 4502 0005 1332⟧.", "iban"),
        ("rekening ⟦NL91ABNA0417164300⟧", "iban"),
        ("conto ⟦IT60 X054 2811 1010 0000 0123 456⟧", "iban"),
        ("IBAN ⟦CH93 0076 2011 6238 5295 7⟧ (Zürich)", "iban"),
        ("رقم الآيبان ⟦SA03 8000 0000 6080 1016 7519⟧", "iban"),
        ("IBAN ⟦GB82 WEST 1234 5698 7654 32⟧ THANKS", "iban"),
        ("konto ⟦PL61 1090 1014 0000 0712 1981 2874⟧", "iban"),
        # US SSN
        ("SSN ⟦536-90-4399⟧ on file", "ssn"),
        ("social security number: ⟦123-45-6789⟧", "ssn"),
        ("ssn=⟦401 22 1234⟧", "ssn"),
        # UK National Insurance number
        ("NI number ⟦AB 12 34 56 C⟧", "nino"),
        ("nino: ⟦JG103726A⟧", "nino"),
        ("National Insurance ⟦ST 48 12 90 D⟧ please", "nino"),
        # IP addresses
        ("request from ⟦203.0.113.7⟧ was blocked", "ip"),
        ("DNS ⟦8.8.8.8⟧", "ip"),
        ("host=⟦192.168.1.20⟧ port=5432", "ip"),
        ("client ⟦2001:db8::8a2e:370:7334⟧ connected", "ip"),
        ("resolver ⟦2606:4700:4700::1111⟧", "ip"),
        ("link-local ⟦fe80::1ff:fe23:4567:890a⟧ on eth0", "ip"),
        ("La IP ⟦198.51.100.23⟧ aparece en los registros.", "ip"),
    ]
)

SENSITIVE_NEGATIVES = [
    # numbers that only look like cards
    "Card 4111 1111 1111 1112 was rejected (bad checksum).",
    "5555 5555 5555 4445",
    "Order #123456789012 shipped.",
    "Bestellnummer 4000123456 wurde versandt.",
    "timestamp 1700000000123 ms",
    "ISBN 978-3-16-148410-0",
    "ISBN-13: 9780306406157",
    "tracking 1Z999AA10123456784",
    "invoice INV-2024-000123",
    "total: 1,234,567.89 USD",
    "€ 1.234.567,89 Umsatz",
    "¥1,234,567 の売上",
    "pi is 3.14159265358979",
    # dates, times, versions
    "Released on 2024-01-15.",
    "Termin am 15.01.2024 um 10:30",
    "le 01/02/2024 à 14h",
    "2023-10-05T14:48:00Z",
    "2023-10-05 14:48:00.123456",
    "version 1.2.3",
    "upgrade to v1.2.3.4 now",
    "Windows 10.0.19045.3803",
    "python==3.11.7",
    "Build 20240115.3",
    "14:48:00",
    # IBAN look-alikes
    "DE89 3704 0044 0532 0130 01",
    "GB82 WEST 1234 5698 7654 33",
    "NL91ABNA0417164301",
    # SSN look-alikes (invalid area, group or serial)
    "000-12-3456",
    "666-12-3456",
    "912-34-5678",
    "123-00-4567",
    "123-45-0000",
    # NINO look-alikes
    "QQ 12 34 56 C",
    "GB 12 34 56 A",
    "AB 12 34 56 E",
    "DA 12 34 56 A",
    # IPs that identify nobody, and IP-ish strings
    "listening on 127.0.0.1:8080",
    "bind 0.0.0.0",
    "netmask 255.255.255.0",
    "999.1.1.1 is not an address",
    "OID 1.3.6.1.4.1.311",
    "localhost and ::1",
    "std::vector<int> v;",
    "x[1::2] slices every other item",
    "at 12:30:45 sharp",
    "MAC 00:1a:2b:3c:4d:5e",
    # e-mail look-alikes
    "ssh user@host",
    "image icon@2x.png",
    "npm install lodash@4.17.21",
    "ping @alice in the channel",
    "docker pull ghcr.io/org/app@sha256",
    # plain numbers, counts, codes
    "room 101, floor 3",
    "call ext. 4521",
    "population 83,200,000",
    "the answer is 42",
    "PIN 1234",
    "zip 94103",
    "Bestellung 12345678 vom 15.01.2024",
    "coordinates 48.8566, 2.3522",
    "phone numbers like 12345 are too short",
    "order 1234-5678-9012",
    "順番号 20240115001",
    "رقم الطلب 987654321",
]

SECRET_POSITIVES = _load(
    [
        ("aws_access_key_id=⟦AKIAIOSFODNN7EXAMPLE⟧", "aws_access_key"),
        ("temporary creds ⟦ASIAY34FZKBOKMUTVV7A⟧ expire soon", "aws_access_key"),
        ('"AccessKeyId": "⟦AKIAI44QH8DHBEXAMPLE⟧"', "aws_access_key"),
        ("aws_secret_access_key = ⟦wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY⟧", "aws_secret_key"),
        ("AWS secret: ⟦je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY⟧", "aws_secret_key"),
        (f"⟦-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}-----END RSA PRIVATE KEY-----⟧", "private_key"),
        (f"key:\n⟦-----BEGIN PRIVATE KEY-----\n{_PEM_BODY}-----END PRIVATE KEY-----⟧\nbye", "private_key"),
        ("⟦-----BEGIN OPENSSH PRIVATE KEY-----⟧\n(truncated)", "private_key"),
        ("⟦-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIB\\n-----END EC PRIVATE KEY-----⟧", "private_key"),
        (f"Authorization: Bearer ⟦{_JWT}⟧", "jwt"),
        ("unsigned ⟦eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyMTIzIn0.⟧ accepted?!", "jwt"),
        ("GITHUB_TOKEN=⟦ghp_FAKEexample0123456789abcdefABCDEF0123⟧", "github_token"),
        ("oauth ⟦gho_16C7e42F292c6912E7710c838347Ae178B4a⟧", "github_token"),
        ("⟦ghs_1234567890abcdefghijklmnopqrstuvwxyzAB⟧", "github_token"),
        ("pat: ⟦github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH⟧", "github_token"),
        ("OPENAI_API_KEY=⟦sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf6h⟧", "openai_key"),
        ("key ⟦sk-FAKE1234567890abcdefT3BlbkFJ1234567890abcdefGH⟧", "openai_key"),
        ("ANTHROPIC_API_KEY=⟦sk-ant-api03-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf-FAKEAA⟧", "anthropic_key"),
        ("slack bot ⟦xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUv⟧", "slack_token"),
        ("user token ⟦xoxp-1111111111-2222222222-3333333333-abcdef0123456789⟧", "slack_token"),
        ("STRIPE_SECRET=⟦sk_live_FAKE51HxYzExample0123456789⟧", "stripe_key"),
        ("restricted ⟦rk_live_FAKE51HxYzExample0123456789⟧", "stripe_key"),
        ("maps key=⟦AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q⟧&callback=init", "google_api_key"),
        (
            '⟦{"type": "service_account", "project_id": "demo", "private_key_id": "abc", '
            '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n", '
            '"client_email": "x@demo.iam.gserviceaccount.com"}⟧',
            "gcp_service_account",
        ),
        (
            "DefaultEndpointsProtocol=https;AccountName=devstore;AccountKey=⟦Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uS"
            "RZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==⟧;EndpointSuffix=core.windows.net",
            "azure_storage_key",
        ),
        ("password=⟦hunter2!⟧", "password_assignment"),
        ('{"username": "admin", "password": "⟦Tr0ub4dor&3⟧"}', "password_assignment"),
        ("DB_PASSWORD=⟦s3cr3tP4ss⟧", "password_assignment"),
        ("passwd: ⟦Summer2024!⟧", "password_assignment"),
        ("mysql -u root --password=⟦Zx9!mK2pQ⟧ prod", "password_assignment"),
        ("spring.datasource.password = '⟦correct horse battery⟧'", "password_assignment"),
        ("Passwort vergessen? Das alte war password: ⟦Berlin#2023⟧", "password_assignment"),
        ("mot de passe — password=⟦Paris_75008⟧", "password_assignment"),
        ("パスワード password: ⟦Tokyo2024pass⟧", "password_assignment"),
        ("api secret ⟦Zx8Qp2Lm9Rt4Vw7Yb3Nc6Kd1Hf5Gj0⟧ rotated", "high_entropy"),
        ("X-Api-Key: ⟦q8FZ2kP0wLx7RbT3mN9cV1yH6dJ4sA5e⟧", "high_entropy"),
        ("webhook signing secret ⟦whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw⟧", "high_entropy"),
        ("export TOKEN=⟦8f14e45fceea167a5a36dedd4bea2543⟧", "high_entropy"),
        ("https://storage.example.com/file?sig=⟦Xk9Lm2Qp8Rt4Vw7Yb3Nc6Kd1Hf5Gj0A⟧&se=2024", "high_entropy"),
        ("Basic ⟦dXNlcm5hbWU6UzNjcjN0UGFzc3dvcmQxMjM=⟧", "high_entropy"),
        ("Clé secrète : ⟦mZ7Kp3Qx9Lw2Rv8Tn4Yb6Hc1Jd5Fg0Se⟧", "high_entropy"),
    ]
)

SECRET_NEGATIVES = [
    "The AKIA prefix marks long-term AWS access keys.",
    "XAKIAIOSFODNN7EXAMPLEX is not a key",
    "AKIAEXAMPLE",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed the bug",
    "request id 550e8400-e29b-41d4-a716-446655440000",
    '{"id": "chatcmpl-AbC123xYz456DeF789gHi012", "object": "chat.completion"}',
    "The tool call call_Xk9pQ2mZ7rT4vW8yB1nC3dF6 returned 3 rows.",
    "Anthropic answered msg_01XFDUDYJgAACzvnptvVoYEL with tool use toolu_01A09q90qw90lq917835lq9.",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736",
    '"integrity": "sha512-9x8Rj2kQ1wZp5mL7nV3bC6dF0gH4jK8sT2yU5iO9pA1eR3tW7qE6zX4cV8bN2mQ1wZp5mL7nV3bC6dF0gH4jK8sT2y=="',
    "requests==2.31.0 --hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f",
    "golang.org/x/text v0.14.0 h1:ScX5w1eTa3QqT8oi6+ziP7dTV1S2+ALU0bI+0zXKWiQ=",
    "docker pull nginx@sha256:0d17b565c37bcbd895e9d92315a05c1c3c9a29f762b011a10c54a66cd53c9b31",
    "aGVsbG8gd29ybGQ=",
    "aGVsbG8gd29ybGQsIHRoaXMgaXMgZmluZQ==",
    "Don't let your sk-ills get rusty.",
    "the task-management-system-for-everyone project",
    "pip install scikit-learn; sk-learn is a typo",
    "ghp_short",
    "AIzaShort",
    "xoxo-gossip-girl-fan-club-2024",
    "see /usr/local/lib/python3.11/site-packages/agentgw/guardrails/detectors.py",
    "https://github.com/agentgw/agentgw/blob/main/src/components/UserProfileCard2.tsx",
    "C:\\Users\\Administrator\\AppData\\Local\\Programs\\Python311",
    "class AbstractSingletonProxyFactoryBean extends Object",
    "getUserAccountDetailsByIdentifier2(id)",
    "XMLHttpRequestEventTarget2",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word",
    "internationalization and localization",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----",
    "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
    "Password: required",
    "password = os.environ['DB_PASSWORD']",
    "def login(user, password=None):",
    "password: ${DB_PASSWORD}",
    "password: <your-password>",
    "password: ********",
    'password: "{{ vault_db_password }}"',
    "password=self.password",
    "Reset your password: see the account page.",
    "passwordless: true",
    "pod api-server-7d9f8b6c5d-x2k4q restarted",
    "MAX_RETRY_COUNT_FOR_UPSTREAM_2 = 5",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
]

# Heuristic limits, kept short; each one says why it cannot be told apart from the text alone.
KNOWN_MISSES: list[tuple[str, str]] = []
KNOWN_FALSE_POSITIVES: list[str] = []


def covered(detector: Detector, text: str, kind: str) -> bool:
    """A finding of `kind` covers the value (its marked span, or anywhere when the text has no recorded span)."""
    start, end = SPANS.get(text, (0, 0))
    return any(f.kind == kind and f.start <= start and f.end >= end for f in detector.find(text))


def rates(
    detector: Detector, positives: Sequence[tuple[str, str]], negatives: Sequence[str]
) -> dict[str, float]:
    """Detection rate (positives whose value a finding of the expected kind covers) and false-positive rate
    (negatives with any finding)."""
    found = sum(covered(detector, text, kind) for text, kind in positives)
    false = sum(bool(detector.find(text)) for text in negatives)
    return {
        "detection": found / len(positives) if positives else 1.0,
        "false_positive": false / len(negatives) if negatives else 0.0,
        "positives": float(len(positives)),
        "negatives": float(len(negatives)),
    }
