"""Prompt injection in data: weighted heuristics (instruction overrides, system-prompt probes, chat-template
markers, invisible text, data-carrying image links, tool hijacking, encoded instructions) over the folded text,
combined into one score per text."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

import re2  # type: ignore[import-untyped]

from agentgw.guardrails.findings import Finding
from agentgw.guardrails.normalize import Normalized, fold_evasions, normalize

KINDS = (
    "instruction_override",
    "system_prompt_probe",
    "role_marker",
    "hidden_unicode",
    "exfiltration",
    "tool_hijack",
    "encoded_payload",
)


class Rule(NamedTuple):
    """One heuristic: its finding kind, its weight (0..1), its RE2 source over the folded text (a space means
    a run of whitespace, " ?" an optional one; in a link rule the group `url` is the URL), and how the weight
    is refined."""

    kind: str
    weight: float
    pattern: str
    handler: str = ""


# fmt: off
_O, _P, _R, _X, _T = "instruction_override", "system_prompt_probe", "role_marker", "exfiltration", "tool_hijack"
_AI = r"(?:ai|a\.i\.|llm|large language model|language model|assistant|agent|chatbot|bot|gpt|chatgpt|claude|gemini|copilot|model)s?"
_NOUN = r"(?:instructions?|prompts?|directions|directives?|rules|guidelines|guidance|commands|orders|context|constraints|restrictions|programming|policies|guardrails|safeguards|system prompt)"
_QUAL = r"(?:previous|prior|above|earlier|preceding|former|foregoing|original|initial|system|developer|safety)"
_DE_VERB = r"(?:ignoriere|ignorier|ignorieren sie|ignoriert|missachte|missachten sie|vergiss|vergesst|vergessen sie|verwirf|verwerfen sie)"
_DE_NOUN = r"(?:anweisungen|anordnungen|instruktionen|befehle|regeln|vorgaben|richtlinien|systemanweisungen|systemprompts?|prompts?)"
_FR_VERB = r"(?:ignore|ignorez|ignorer|oublie|oubliez|oublier|neglige|negligez|ne tiens pas compte des|ne tenez pas compte des)"
_FR_NOUN = r"(?:instructions|consignes|directives|regles|ordres|commandes|indications)"
_ES_VERB = r"(?:ignora|ignore|ignoren|ignorar|olvida|olvide|olviden|olvidar|descarta|descarte|omite|omita|haz caso omiso de|hagan caso omiso de)"
_ES_NOUN = r"(?:instrucciones|indicaciones|ordenes|reglas|directivas|directrices|normas|consignas)"
_SENSITIVE = r"(?:credentials?|passwords?|passwds?|api keys?|access keys?|secret keys?|tokens?|secrets?|conversations?|chat (?:history|logs?)|contacts|address book|inbox|cookies|\.env(?: file)?|env(?:ironment)? (?:file|variables)|ssh keys?|private keys?|source code|mcp\.json|system prompt)"
_BULK = r"(?:all|every|entire|whole) (?:of )?(?:the |my |your |their |his |her )?(?:[\w']+ ){0,2}?(?:emails?|messages?|files|documents|data|records|attachments|database|history)"
_TARGET = r"(?:[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://|(?:this|the following|that|our|my) (?:address|e-?mail|url|endpoint|webhook|server))"

# Phrases: matched on the folded text and on its leetspeak skeleton.
PHRASES: tuple[Rule, ...] = (
    # instruction_override, English
    Rule(_O, 0.85, rf"\b(?:ignore|disregard|forget|neglect|discard|abandon) (?:(?:all|any|every|each) (?:of )?)?(?:(?:the|your|my|these|those|this|its) )?{_QUAL}(?: {_QUAL})? {_NOUN}\b"),
    Rule(_O, 0.7, r"\b(?:ignore|disregard|forget|override|bypass) (?:all|any|every) (?:of )?(?:the |your |my )?(?:instructions|rules|guidelines|directives|restrictions|constraints|prompts|safety)\b"),
    Rule(_O, 0.8, r"\b(?:ignore|disregard|forget|override|bypass|abandon|discard) your (?:\w+ )?(?:instructions|rules|guidelines|directives|programming|training|system prompt|prompt|restrictions|constraints|safety|guardrails|principles|policies)\b"),
    Rule(_O, 0.6, r"\b(?:ignore|disregard|forget) (?:all (?:of )?)?(?:the |everything )?(?:above|foregoing|preceding)(?:\s*[.,;:!]|\s+and\b|\s*$)"),
    Rule(_O, 0.8, r"\bforget (?:about )?(?:everything|all) (?:(?:that )?you(?:'ve| have)? (?:been told|were told)|(?:that )?(?:was |has been )?(?:said |written |told )?(?:above|before|previously|earlier|so far)|(?:of )?(?:your|the|previous|prior) (?:instructions|rules))"),
    Rule(_O, 0.35, r"\bforget everything\b"),
    Rule(_O, 0.55, r"\b(?:new|updated|revised|real|actual|true|additional|secret|hidden|override) (?:system )?(?:instructions?|directives?|orders|prompt)\s*:"),
    Rule(_O, 0.65, r"\byou are now (?:an? |the |my )?(?:ai|assistant|model|bot|chatbot|dan|unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|different (?:ai|assistant|model|person)|acting as|playing|operating as|free (?:from|of)|no longer (?:bound|restricted|limited|an? (?:ai|assistant))|in (?:developer|god|dan|jailbreak|unrestricted|debug|admin) mode)"),
    Rule(_O, 0.65, r"\b(?:from now on|henceforth|going forward|for the rest of (?:this|the) conversation)\s*,? (?:you (?:will|must|shall|should|are to|have to|can|may) (?:only |always |never |not )?(?:respond|answer|reply|act|behave|pretend|ignore|obey|follow|speak|talk|output|write|say|refuse|comply|begin|start|end|include|append|add|be called|be known|address)|(?:always|only|never) (?:respond|answer|reply|say|output|write|include|append))"),
    Rule(_O, 0.45, r"\b(?:pretend (?:to be|you are|that you are)|act as (?:if you (?:are|were)|an? (?:unrestricted|unfiltered|jailbroken|evil|rogue|different)|dan\b)|role-?play as)"),
    Rule(_O, 0.6, r"\b(?:do not|don't|dont|never|without) (?:tell|telling|inform|informing|notify|notifying|alert|alerting|ask|asking|consult|consulting|mention(?:ing)? (?:this|it|that|these \w+) to|reveal(?:ing)? (?:this|it|that|these \w+) to|let(?:ting)?|show(?:ing)? (?:this|it) to) (?:the )?(?:user|human|operator|customer|owner|requester)s?\b"),
    Rule(_O, 0.6, r"\b(?:do not|don't|dont|never) (?:mention|reveal|disclose|acknowledge) (?:this|these|that|the|any of these) (?:instructions?|message|note|text|comment|directions?)\b"),
    Rule(_O, 0.6, r"\b(?:the )?(?:user|human) (?:must|should|shall) (?:not|never) (?:know|see|find out|notice|be told|learn)\b"),
    Rule(_O, 0.55, rf"\b(?:attention|note|message|notice|reminder|important(?: note| message)?) (?:to|for) (?:all |any |the )?{_AI}\b"),
    Rule(_O, 0.6, r"\bif you are (?:an? )?(?:ai|llm|large language model|language model|assistant|agent|chatbot|bot|automated (?:system|agent|assistant)|gpt|claude)\b"),
    Rule(_O, 0.4, r"\b(?:dear|hey|hello|hi)[ \t]*,?[ \t]+(?:ai|assistant|agent|llm|chatbot|gpt|chatgpt|claude|model)\b"),
    Rule(_O, 0.6, r"\b(?:ai|llm|assistant|agent|model|chatbot|bot)s? (?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|browsing|viewing) (?:this|these)\b"),
    Rule(_O, 0.6, r"\byour (?:real|true|actual|new|updated|secret|hidden) (?:task|goal|objective|mission|job|purpose|instructions?|orders|directive) (?:is|are|will be|now|:)"),
    Rule(_O, 0.5, r"\bstop (?:what you(?:'re| are) doing|(?:summari[sz]ing|translating|following your instructions)\b|the current task)"),
    Rule(_O, 0.5, r"\b(?:system|admin|administrator|developer|root) (?:override|mode|command|instruction)s?\s*:"),
    # German, French, Spanish, Italian, Portuguese, Dutch (accents are folded away)
    Rule(_O, 0.85, rf"\b{_DE_VERB}(?: bitte)? (?:(?:alle|samtliche|jegliche|die|deine|ihre|der|den|dem) )*(?:vorherigen|bisherigen|vorigen|obigen|fruheren|vorangegangenen|alten|ursprunglichen|vorhergehenden|gegebenen|oben genannten) (?:\w+ )?{_DE_NOUN}\b"),
    Rule(_O, 0.8, rf"\b{_DE_VERB} (?:alle )?(?:deine|ihre) {_DE_NOUN}\b"),
    Rule(_O, 0.55, r"\b(?:vergiss|vergessen sie|vergesst) alles\b"),
    Rule(_O, 0.55, r"\bneue (?:anweisungen|instruktionen|befehle|regeln|systemanweisungen)\s*:"),
    Rule(_O, 0.6, r"\bdu bist (?:jetzt|nun|ab sofort|ab jetzt) (?:eine? |der |die )?(?:ki|assistent|bot|dan|uneingeschrankt|ohne (?:regeln|einschrankungen|filter)|nicht mehr an)"),
    Rule(_O, 0.4, r"\bab (?:jetzt|sofort|nun)(?: an)?\s*,? (?:wirst|musst|sollst|darfst) du\b"),
    Rule(_O, 0.6, r"\b(?:sag|sage|teile|erzahle|verrate)(?: es| das| dies)? (?:dem|der) (?:benutzer|nutzer|anwender|user)(?:in)? (?:nichts|nicht)\b"),
    Rule(_O, 0.5, r"\bohne (?:den|die) (?:benutzer|nutzer)(?:in)? (?:zu informieren|zu fragen|zu benachrichtigen|davon)"),
    Rule(_O, 0.55, r"\b(?:hinweis|nachricht|achtung|wichtig) (?:an|fur) (?:die |den |alle )?(?:ki|ki-?assistent(?:en)?|assistent(?:en)?|sprachmodell(?:e)?|llms?)\b"),
    Rule(_O, 0.85, rf"\b{_FR_VERB}(?: (?:toutes|tous|les|tes|vos|ces|des))* {_FR_NOUN} (?:qui (?:precedent|ont ete donnees)|precedentes|anterieures|ci-dessus|ci dessus|precedents|initiales|d'origine|du systeme|systeme)"),
    Rule(_O, 0.8, rf"\b(?:ignore|ignorez|oublie|oubliez) (?:toutes )?(?:tes|vos) {_FR_NOUN}\b"),
    Rule(_O, 0.75, r"\b(?:ignore|ignorez|oublie|oubliez) tout ce (?:qui (?:precede|a ete dit|est ecrit)|que (?:tu sais|l'on t'a dit|je t'ai dit|vous savez|on vous a dit))"),
    Rule(_O, 0.4, r"\boublie[zs]? tout\b"),
    Rule(_O, 0.55, r"\bnouvelles? (?:instructions|consignes|directives|regles)\s*:"),
    Rule(_O, 0.6, r"\b(?:tu es|vous etes) (?:maintenant|desormais|a present) (?:une? |le |la )?(?:ia|assistant|bot|dan|libre de|sans (?:restrictions|regles|filtre))"),
    Rule(_O, 0.4, r"\b(?:a partir de maintenant|desormais|dorenavant)\s*,? (?:tu|vous) (?:dois|devez|vas|allez|repondras|repondrez|ignoreras|ignorerez|obeiras|obeirez)\b"),
    Rule(_O, 0.6, r"\bne (?:le |l'|lui |rien )?(?:dis|dites|mentionne|mentionnez|revele|revelez|signale|signalez)(?: rien| pas| jamais)?(?: (?:de )?(?:ceci|cela|ca|rien))? (?:a|au) ?l'\s*utilisat(?:eur|rice)"),
    Rule(_O, 0.5, r"\bsans (?:en )?(?:informer|prevenir|avertir|le dire a) l'\s*utilisat(?:eur|rice)"),
    Rule(_O, 0.55, r"\b(?:note|message|attention|avis) (?:a|pour|aux) (?:l'|les? |la |toute )?\s*(?:ia|assistant|agent|modele|llm)s?\b"),
    Rule(_O, 0.85, rf"\b{_ES_VERB}(?: (?:todas|todos|las|los|tus|sus|de))* {_ES_NOUN} (?:anteriores|previas|precedentes|de arriba|originales|iniciales|del sistema|de sistema|que (?:te|le) (?:dieron|han dado))"),
    Rule(_O, 0.8, rf"\b(?:ignora|olvida|ignore|olvide) (?:todas )?(?:tus|sus) {_ES_NOUN}\b"),
    Rule(_O, 0.75, r"\bolvida(?:r)? todo lo (?:anterior|que (?:sabes|te (?:dije|han dicho|dijeron)))"),
    Rule(_O, 0.4, r"\bolvida todo\b"),
    Rule(_O, 0.55, r"\bnuevas (?:instrucciones|ordenes|reglas|indicaciones)\s*:"),
    Rule(_O, 0.6, r"\b(?:ahora eres|a partir de ahora eres|ahora seras) (?:una? |el |la )?(?:ia|asistente|bot|dan|libre|sin (?:restricciones|reglas|filtros))"),
    Rule(_O, 0.4, r"\b(?:a partir de ahora|desde ahora)\s*,? (?:debes|deberas|vas a|responderas|ignoraras|obedeceras|solo)\b"),
    Rule(_O, 0.6, r"\bno (?:le )?(?:digas|diga|menciones|mencione|informes|informe|reveles|revele|cuentes|cuente)(?: nada| esto| eso)?(?: de esto)? (?:al|a la|a los) (?:usuario|usuaria|usuarios|cliente)"),
    Rule(_O, 0.5, r"\bsin (?:informar|avisar|decir(?:le)?|notificar)(?: nada)? al usuario"),
    Rule(_O, 0.55, r"\b(?:nota|mensaje|atencion|aviso) (?:para|a) (?:la |el |los |las |cualquier )?(?:ia|asistente|agente|modelo|llm)s?\b"),
    Rule(_O, 0.85, r"\b(?:ignora|dimentica) (?:tutte )?(?:le )?(?:istruzioni|indicazioni|regole) (?:precedenti|sopra|iniziali|originali)"),
    Rule(_O, 0.85, r"\b(?:ignore|ignora|esqueca|esquece|desconsidere)(?: (?:todas|as|suas|tuas))* (?:instrucoes|orientacoes|regras|ordens) (?:anteriores|previas|acima|iniciais|originais)"),
    Rule(_O, 0.85, r"\b(?:negeer|vergeet)(?: (?:alle|de|je|jouw|uw))* (?:vorige|eerdere|voorgaande|bovenstaande|oorspronkelijke) (?:instructies|aanwijzingen|regels|opdrachten)"),
    # system_prompt_probe
    Rule(_P, 0.7, r"\b(?:reveal|print|show|display|output|repeat|recite|dump|leak|expose|share|disclose|tell me|give me|write out|write down|paste|return|echo|send me|spell out|translate|what (?:is|are|was|were)) (?:me )?(?:all |back )?(?:of )?your (?:(?:full|entire|complete|exact|original|initial|hidden|secret|internal|verbatim|raw|whole|confidential|first) )*(?:system (?:prompt|message|instructions?)|(?:initial|original|hidden|secret|developer|internal|confidential|pre-?) ?(?:prompt|instructions?|message)|prompt|instructions)\b"),
    Rule(_P, 0.7, r"\b(?:reveal|print|show|display|output|repeat|recite|dump|leak|expose|disclose|give me|paste|echo|spell out) (?:me )?(?:all )?(?:of )?the (?:(?:full|entire|complete|exact|original|initial|hidden|secret|internal|verbatim|raw|whole|confidential) )+(?:system (?:prompt|message|instructions?)|prompt|instructions)\b"),
    Rule(_P, 0.6, r"\b(?:reveal|leak|dump|expose|disclose|recite) the system (?:prompt|message|instructions?)\b"),
    Rule(_P, 0.6, r"\bwhat (?:were|are|was|is) your (?:(?:original|initial|exact|system|hidden|secret|first) )*(?:instructions|rules|directives|guidelines|prompt|system prompt)\b"),
    Rule(_P, 0.6, r"\brepeat (?:everything|all (?:the )?(?:text|words)|the (?:text|words|prompt)) (?:above|before this|verbatim|that came before)"),
    Rule(_P, 0.7, r"\b(?:zeige|zeig|gib|nenne|wiederhole|verrate|drucke|schreibe)(?: mir| uns)?(?: aus)? (?:(?:deinen|deine|dein|ihren|ihre) (?:(?:vollstandigen?|ursprunglichen?|geheimen?|versteckten?|gesamten?|genauen?) )*(?:system ?-?prompt|systemanweisungen|systemnachricht|system-?anweisungen|anweisungen|instruktionen|prompt)|(?:den|die) (?:system ?-?prompt|systemanweisungen))\b"),
    Rule(_P, 0.6, r"\bwas (?:sind|waren|ist|war) (?:deine|dein|ihre|ihr) (?:anweisungen|instruktionen|system ?-?prompt)\b"),
    Rule(_P, 0.7, r"\b(?:revele|revelez|montre|montrez|affiche|affichez|donne|donnez|repete|repetez|ecris|ecrivez|imprime|imprimez|dis|dites)(?:\s*-?\s*(?:moi|nous))? (?:ton|votre|tes|vos|le|les) (?:(?:prompt|message|invite) (?:systeme|system|initial|d'origine|cache|secret)|instructions (?:initiales|systeme|d'origine|completes|cachees|secretes|originales)|prompt systeme)"),
    Rule(_P, 0.6, r"\bquelles (?:sont|etaient) (?:tes|vos) (?:instructions|consignes)\b"),
    Rule(_P, 0.7, r"\b(?:revela|revele|muestra|muestrame|muestre|dime|digame|imprime|repite|repiteme|ensename|escribe|dame)(?: me)? (?:tu|tus|el|las|su|sus) (?:prompt (?:del sistema|de sistema|inicial|original|oculto|secreto)|instrucciones (?:del sistema|iniciales|originales|de sistema|ocultas|secretas|completas)|mensaje del sistema)"),
    Rule(_P, 0.6, r"\b(?:cuales|que) (?:son|eran) tus instrucciones\b"),
    # tool_hijack
    Rule(_T, 0.45, r"\b(?:call|invoke|execute|trigger|run|use) (?:the )?[`'\"]?[a-z_][a-z0-9_.\-]*[`'\"]? (?:tool|function|action|plugin)\b"),
    Rule(_T, 0.45, r"\b(?:call|invoke|execute|trigger) (?:the )?(?:tool|function) [`'\"]?[a-z_][a-z0-9_.\-]*"),
    Rule(_T, 0.2, r"\b(?:run|execute) (?:the following|this|these) (?:shell |bash |terminal |system |powershell )?(?:commands?|scripts?|code|one-liner)\b"),
    Rule(_T, 0.3, r"\b(?:curl|wget|iwr|irm|invoke-webrequest|invoke-restmethod)\b[^\n|]{0,200}\|\s*(?:sudo\s+)?(?:ba|z|da|k)?sh\b|\|\s*iex\b"),
    Rule(_T, 0.35, r"\brm -(?:rf|fr|r) (?:/|~|\*|\$home|--no-preserve-root)"),
    Rule(_T, 0.6, rf"\b(?:send|forward|e-?mail|mail|upload|transfer|exfiltrate|copy|post|leak|share|paste|submit)(?: (?:all|every|the|this|these|your|my|his|her|their|a copy of|contents? of|any|of|last|recent|\d+))* (?:(?:user'?s?|private|saved|stored|current|full|entire|recent|previous|whole|confidential|internal|unread|latest) )*{_SENSITIVE}\b[^\n]{{0,80}}?\b(?:to|at) {_TARGET}"),
    Rule(_T, 0.55, rf"\b(?:send|forward|e-?mail|mail|upload|transfer|exfiltrate|copy|post|leak) {_BULK}\b[^\n]{{0,80}}?\b(?:to|at) {_TARGET}"),
    Rule(_T, 0.55, r"\b(?:silently|quietly|covertly|secretly|discreetly) (?:call|invoke|run|execute|send|forward|upload|email|include|append|add|copy|post|fetch|visit|open|delete|transfer)\b"),
    Rule(_T, 0.3, r"(?:~|\$home|%userprofile%|/home/[\w.-]+|/root|/users/[\w.-]+)/\.(?:ssh|aws|gnupg|kube|docker|cursor|netrc|npmrc|pypirc|git-credentials|env)\b|\bid_(?:rsa|ed25519|ecdsa)\b|/etc/(?:passwd|shadow)\b|\bmcp\.json\b|\bcredentials\.json\b"),
    Rule(_T, 0.5, r"\b(?:read|load|include|attach|upload|pass|send|exfiltrate)(?: the)?(?: contents?(?: of)?)?(?: the)?(?: file)? [`'\"]?(?:~|\$home|/home/[\w.-]+|/root|/users/[\w.-]+)/\.(?:ssh|aws|gnupg|kube|docker|cursor|netrc|env|git-credentials|config)"),
    # exfiltration, said in words
    Rule(_X, 0.7, r"\b(?:append|add|include|insert|embed|encode|put|attach|concatenate)\b[^\n]{0,60}?\b(?:conversation|chat history|previous messages|user'?s? (?:data|messages?|e-?mail|name|password|question|query|input)|api keys?|passwords?|secrets?|tokens?|credentials|system prompt|memory|personal (?:data|information)|private (?:data|information))\b[^\n]{0,60}?\b(?:to|in|into|as|at the end of) (?:the |this |a |an )?(?:url|link|image (?:url|link|source)|query string|query param(?:eter)?|parameter|markdown image|request|webhook|endpoint)"),
    Rule(_X, 0.6, r"\b(?:visit|open|fetch|browse to|navigate to|load|request|make a (?:get|post) request to|call) (?:the )?(?:url |link |page )?https?://[^\s]*[?&][\w-]+=(?:\{|\[|<|\$)"),
)

# Chat-template and role markers: matched on the folded text only (leetspeak has nothing to do with them).
MARKERS: tuple[Rule, ...] = (
    Rule(_R, 0.75, r"<\|\s*(?:im_start|im_end|im_sep|system|user|assistant|endoftext|begin_of_text|end_of_text|start_header_id|end_header_id|eot_id|eom_id|fim_prefix|fim_middle|fim_suffix|tool|ipython|developer|channel|message|start|end|return|call|constrain)\s*\|>"),
    Rule(_R, 0.6, r"\[/?inst\]|<</?sys>>"),
    Rule(_R, 0.45, r"(?m)^[ \t]*#{2,}[ \t]*(?:system|human|assistant|user)[ \t]*:"),
    Rule(_R, 0.35, r"(?m)^[ \t]*#{2,}[ \t]*(?:instructions?|input|response|context)[ \t]*:"),
    Rule(_R, 0.35, r"<\s*(?:system|system[_-]prompt|sys|instructions?|admin|developer|important|secret|hidden)\s*>"),
    Rule(_R, 0.3, r"(?m)^[ \t>*_#-]*(?:system|developer)(?:[ \t]+(?:message|prompt|override|note|instruction|update|alert))?[ \t]*:", "shouted"),
    Rule(_R, 0.3, r"(?m)^[ \t>*_-]*human[ \t]*:"),
    Rule(_R, 0.3, r"(?m)^[ \t>*_-]*assistant[ \t]*:"),
)

# Links and auto-loaded resources: weighed by _link_weight on the original URL.
LINKS: tuple[Rule, ...] = (
    Rule(_X, 0.0, r"!\[[^\]\n]*\]\(\s*<?(?P<url>https?://[^\s)>]+)", "image"),
    Rule(_X, 0.0, r"<(?:img|iframe|script|embed|source|video|audio|object)\b[^>]*?\b(?:src|data)\s*=\s*[\"']?(?P<url>https?://[^\s\"'>]+)", "image"),
    Rule(_X, 0.0, r"\[[^\]\n]*\]\(\s*<?(?P<url>https?://[^\s)>]+)", "link"),
    Rule(_X, 0.0, r"(?m)^[ \t]*\[[^\]\n]+\]:\s*<?(?P<url>https?://[^\s>]+)", "link"),
    Rule(_X, 0.0, r"<a\b[^>]*?\bhref\s*=\s*[\"']?(?P<url>https?://[^\s\"'>]+)", "link"),
)
# fmt: on

_OPTIONS = re2.Options()
_OPTIONS.max_mem = 64 << 20  # the alternations below outgrow RE2's 8 MiB default


def _spaces(pattern: str) -> str:
    """A rule's spaces as whitespace runs (" ?" as an optional one), except inside character classes."""
    out: list[str] = []
    in_class = escaped = False
    for i, ch in enumerate(pattern):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]" or pattern[i - 1] == "["
        elif ch == "[":
            in_class = True
        elif ch == " ":
            ch = r"\s*" if pattern[i + 1 : i + 2] == "?" else r"\s+"
        elif ch == "?" and pattern[i - 1 : i] == " ":
            continue
        out.append(ch)
    return "".join(out)


class _Family:
    """A rule family compiled into one RE2 alternation: a DFA pass over a clean text costs a few µs per KB,
    where one Python regex per rule would cost that per rule."""

    def __init__(self, rules: tuple[Rule, ...], *, skeleton: bool = False) -> None:
        parts = []
        for i, rule in enumerate(rules):
            source = _spaces(rule.pattern).replace("(?P<url>", f"(?P<u{i}>")
            if skeleton:  # the leetspeak skeleton writes every l as i (see normalize.leet_skeleton)
                source = source.replace("l", "i")
            parts.append(f"(?P<r{i}>{source})")
        self.pattern = re2.compile("|".join(parts), _OPTIONS)
        index = self.pattern.groupindex
        self.rules = {
            index[f"r{i}"]: (rule, index.get(f"u{i}", index[f"r{i}"])) for i, rule in enumerate(rules)
        }

    def spans(self, norm: Normalized) -> Iterator[tuple[int, int, Rule]]:
        """Each match as a span of the original text (the URL's, for a link rule) and its rule."""
        text = norm.text
        # an ASCII text as bytes: the binding then maps no byte offsets back to characters (per group, per match)
        for m in self.pattern.finditer(text.encode() if text.isascii() else text):
            rule, group = self.rules[m.lastindex]
            start, end = m.span(group)
            if end > start:
                yield (*norm.span(start, end), rule)


_PHRASES = _Family(PHRASES)
_PHRASES_SKELETON = _Family(PHRASES, skeleton=True)
_MARKERS = _Family(MARKERS)
_LINKS = _Family(LINKS)

# Invisible text, on the original characters (normalize drops them). One character class decides whether the
# detailed scan is needed at all.
_HIDDEN_ANY = re.compile(
    "[\u00ad\u180e\u200b-\u200d\u202a-\u202e\u2060-\u2069\ufeff\ufe00-\ufe0f\U000e0000-\U000e01ef]"
)
_HIDDEN = re.compile(
    "(?P<tags>[\U000e0000-\U000e007f]+)"
    "|(?P<override>[\u202d\u202e])"
    "|(?P<embed>[\u202a-\u202c\u2066-\u2069])"
    "|(?P<zw_run>[\u00ad\u180e\u200b-\u200d\u2060-\u2064\ufeff]{3,})"
    "|(?P<zw_in_word>(?<=[A-Za-z])[\u200b-\u200d\u2060\ufeff]+(?=[A-Za-z]))"
    "|(?P<selectors>[\ufe00-\ufe0f\U000e0100-\U000e01ef]{2,})"
)
# Tag characters are also how emoji spell subdivision flags (England, Scotland, Wales): black flag, tag
# letters, cancel tag.
_FLAG_TAGS = re.compile("[\U000e0020-\U000e007e]{1,12}\U000e007f")
_HIDDEN_WEIGHTS = {
    "tags": 0.9,
    "override": 0.5,
    "embed": 0.2,
    "zw_run": 0.8,
    "zw_in_word": 0.3,
    "selectors": 0.8,
}

# Base64 candidates on the original text (the fold lowercases, which would corrupt them); a data URI's media
# type decides whether its payload is worth decoding (images and fonts are not).
_BLOB = re2.compile(
    r"((?i:data:)([a-zA-Z]+/[a-zA-Z0-9.+-]+)(?:;[a-zA-Z0-9=.-]+)*,)?([A-Za-z0-9+/_-]{24,}(?:\r?\n[A-Za-z0-9+/_-]{4,})*={0,2})"
)
_NOT_BASE64_SHAPE = re.compile(r"[0-9a-f-]+|[0-9A-F-]+|[a-z_-]+|[A-Z_-]+")

# URL fields that usually carry what an exfiltration link smuggles out.
_DATA_KEYS = frozenset(
    "q d data text msg message content secret token key password pwd pass email mail conversation chat "  # noqa: SIM905
    "history summary info payload p x c s u leak exfil memory prompt user ctx context body".split()
)
_TEMPLATE = re.compile(r"[{}<>]|%7[bd]|%3[ce]|\$\{", re.IGNORECASE)
# A value standing for what the model is to fill in: SECRET_API_KEY, [DATA], CONVERSATION.
_PLACEHOLDER = re.compile(
    r".*[\[\]].*|[A-Z]+(?:_[A-Z0-9]+)+|(?:DATA|SECRETS?|PASSWORDS?|TOKENS?|KEYS?|CONVERSATION|CHAT|HISTORY|SUMMARY"
    r"|E?MAIL|INFO|CONTEXT|PROMPT|MEMORY|NAME|ADDRESS|CREDENTIALS|MESSAGES?)",
    re.DOTALL,
)
_BASE64_SEGMENT = re.compile(r"[A-Za-z0-9+/_=-]{32,}")


_Hit = tuple[int, int, str, float, str]  # start, end, kind, weight, which heuristic (one vote each)


class PromptInjection:
    """Heuristic prompt-injection detector for text an agent reads (tool results, pages, mails, messages).

    `score(text)` is 1 - Π(1 - w) over the heuristics that fired, each counted once at its heaviest weight
    (a second `<system>` tag is not more evidence than the first); `find` returns the findings only when the
    score reaches `threshold`. Weak signals (a `Human:` line, `curl … | sh`, "run the following command")
    weigh under 0.5 on purpose: alone they are documentation, together they are an attack. Phrases are matched
    on the folded text, and on its leetspeak/spelled-out fold when there is one, so homoglyphs, zero-width
    characters and "1gn0re" do not dodge them. Links whose host is `allow_hosts` (or a subdomain) are trusted."""

    def __init__(self, threshold: float = 0.5, allow_hosts: Iterable[str] = ()) -> None:
        self.threshold = threshold
        self._allow = tuple(h.lower().strip(".") for h in allow_hosts)

    def find(self, text: str) -> list[Finding]:
        total, findings = self.score(text)
        return findings if total >= self.threshold else []

    def score(self, text: str) -> tuple[float, list[Finding]]:
        hits: list[_Hit] = []
        self._scan(text, hits, nested=False)
        votes: dict[str, float] = {}
        for *_, weight, rule in hits:
            votes[rule] = max(votes.get(rule, 0.0), weight)
        clean = 1.0
        for weight in votes.values():
            clean *= 1.0 - weight
        return min(1.0, max(0.0, 1.0 - clean)), _merge(hits)

    def _scan(self, text: str, hits: list[_Hit], *, nested: bool) -> None:
        norm = normalize(text)
        evasive = fold_evasions(norm)
        for family, folded in ((_PHRASES, norm), (_PHRASES_SKELETON, evasive), (_MARKERS, norm)):
            if folded is None:
                continue
            for start, end, rule in family.spans(folded):
                weight = rule.weight
                if rule.handler == "shouted" and text[start:end].strip(" \t>*_#-:").split()[0].isupper():
                    weight = (
                        0.5  # "SYSTEM:" shouted at a line start; a lower-case "system:" is most often a key
                    )
                hits.append((start, end, rule.kind, weight, rule.pattern))
        if "http" in norm.text:
            for start, end, rule in _LINKS.spans(norm):
                weight = self._link_weight(text[start:end], rule.handler)
                if weight:
                    hits.append((start, end, rule.kind, weight, rule.pattern))
        if not text.isascii() and _HIDDEN_ANY.search(text):
            _hidden(text, hits)
        if not nested:
            _encoded(text, hits, self)

    def _link_weight(self, url: str, how: str) -> float:
        """Weight of a link or auto-loaded resource: 0 unless its host is untrusted and the URL carries data
        (a template to fill in, a long or named query value, a long base64-looking path segment). A plain
        image from any host carries nothing but the fact it was fetched, so it is not reported."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            return 0.0
        if any(host == h or host.endswith("." + h) for h in self._allow):
            return 0.0
        query = parse_qsl(parts.query, keep_blank_values=True)
        if _TEMPLATE.search(url) or any(_PLACEHOLDER.fullmatch(v) for _, v in query):
            return 0.85 if how == "image" else 0.6
        # "/i/<base64>.png": the extension is decoration
        stems = [s.rsplit(".", 1)[0] for s in parts.path.split("/")]
        dataish = (
            any(
                len(v) >= 32 or (k.lower() in _DATA_KEYS and len(v) >= 12 and not v.isdigit())
                for k, v in query
            )
            or any(_PLACEHOLDER.fullmatch(s) for s in stems)
            or any(_BASE64_SEGMENT.fullmatch(s) and not _NOT_BASE64_SHAPE.fullmatch(s) for s in stems)
        )
        if not dataish:
            return 0.0
        return 0.75 if how == "image" else 0.4


def _hidden(text: str, hits: list[_Hit]) -> None:
    for m in _HIDDEN.finditer(text):
        how = m.lastgroup or ""
        start, end = m.span()
        if (
            how == "tags"
            and start > 0
            and text[start - 1] == "\U0001f3f4"
            and _FLAG_TAGS.fullmatch(m.group())
        ):
            continue
        weight = _HIDDEN_WEIGHTS[how]
        if how == "tags" and end - start == 1:
            weight = 0.5
        hits.append((start, end, "hidden_unicode", weight, "hidden_" + how))


def _encoded(text: str, hits: list[_Hit], detector: PromptInjection) -> None:
    """Base64 blobs that decode to printable text which itself sets off a phrase or marker heuristic."""
    for m in _BLOB.finditer(text):
        media = m.group(2)
        if media is not None and not media.lower().startswith("text/"):
            continue
        blob = re.sub(r"\s+", "", m.group(3))
        if _NOT_BASE64_SHAPE.fullmatch(blob):
            continue  # one case only, or hex: identifiers, hashes, slugs
        decoded = _decode(blob)
        if decoded is None:
            continue
        inner: list[_Hit] = []
        detector._scan(decoded, inner, nested=True)
        strongest = max((h[3] for h in inner if h[2] != "hidden_unicode"), default=0.0)
        if strongest >= 0.4:
            start, end = m.span(3)
            hits.append((start, end, "encoded_payload", max(0.85, strongest), "encoded_payload"))


def _decode(blob: str) -> str | None:
    blob = blob.rstrip("=").replace("-", "+").replace("_", "/")
    blob = blob[: len(blob) - len(blob) % 4] if len(blob) % 4 == 1 else blob
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw:
        return None
    printable = sum(1 for b in raw if 32 <= b < 127 or b in (9, 10, 13))
    if printable < 0.95 * len(raw):
        return None
    return raw.decode("ascii", errors="replace")


def _merge(hits: list[_Hit]) -> list[Finding]:
    """Sorted, non-overlapping: overlapping hits become one finding over their union, with the kind and
    score of the heaviest."""
    out: list[Finding] = []
    for start, end, kind, weight, _ in sorted(hits, key=lambda h: (h[0], -h[1])):
        if out and start < out[-1].end:
            last = out[-1]
            heavier = weight > last.score
            out[-1] = Finding(
                kind if heavier else last.kind, last.start, max(end, last.end), max(weight, last.score)
            )
            continue
        out.append(Finding(kind, start, end, weight))
    return out
