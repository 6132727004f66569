//! Surrogates for names and places: bundled word lists per script, and the functions that pick
//! a replacement that keeps the script and the rough length of the original (a Japanese name
//! becomes a Japanese name, so encoding and collation bugs still reproduce in dev). The choice is
//! driven by a seed the caller provides (keyed from the value, or random and remembered by the
//! vault); this module never sees a key.
//!
//! The same lists feed the scanner's name detector.

/// Writing systems veil has lists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Script {
    Latin,
    Cyrillic,
    Greek,
    Arabic,
    Hebrew,
    Devanagari,
    /// Japanese written with kana (and possibly kanji).
    Kana,
    /// Han ideographs only (Japanese or Chinese names).
    Han,
    Hangul,
}

pub struct Lists {
    pub given: &'static [&'static str],
    pub family: &'static [&'static str],
    pub place: &'static [&'static str],
    pub street: &'static [&'static str],
}

const LATIN: Lists = Lists {
    given: &[
        "Ada",
        "Alan",
        "Alice",
        "Amélie",
        "Anders",
        "Ann",
        "Ben",
        "Bruno",
        "Carla",
        "Carmen",
        "Chloé",
        "Clara",
        "Daniel",
        "David",
        "Diego",
        "Elena",
        "Elias",
        "Emma",
        "Eva",
        "Felix",
        "Grace",
        "Hanna",
        "Hugo",
        "Ida",
        "Ines",
        "Iris",
        "Jack",
        "James",
        "Jan",
        "Joan",
        "José",
        "Julia",
        "Karl",
        "Lara",
        "Leo",
        "Liam",
        "Lucía",
        "Luis",
        "Maria",
        "Mary",
        "Mateo",
        "Max",
        "Mia",
        "Nina",
        "Noah",
        "Nora",
        "Olga",
        "Olivia",
        "Omar",
        "Oscar",
        "Paul",
        "Pedro",
        "Rosa",
        "Ruth",
        "Sam",
        "Sara",
        "Sofia",
        "Søren",
        "Theo",
        "Tom",
        "Vera",
        "Zoë",
        "Benedikt",
        "Beatrice",
        "Cornelia",
        "Frederick",
        "Gabriela",
        "Jonathan",
        "Katarzyna",
        "Maximilian",
        "Siobhán",
        "Łukasz",
        "Zbigniew",
        "Alexandra",
        "Christopher",
        "Josephine",
    ],
    family: &[
        "Abe",
        "Adams",
        "Baker",
        "Berg",
        "Brown",
        "Clark",
        "Costa",
        "Cruz",
        "Davis",
        "Dubois",
        "Evans",
        "Fischer",
        "Garcia",
        "García",
        "Green",
        "Hall",
        "Hansen",
        "Jones",
        "Kim",
        "King",
        "Klein",
        "Kowalski",
        "Lee",
        "Lopez",
        "Martin",
        "Meyer",
        "Miller",
        "Moreau",
        "Müller",
        "Nguyen",
        "Novak",
        "O'Brien",
        "Ortiz",
        "Perez",
        "Rossi",
        "Ruiz",
        "Sato",
        "Schmidt",
        "Silva",
        "Smith",
        "Taylor",
        "Vogel",
        "Wagner",
        "Walker",
        "White",
        "Wilson",
        "Young",
        "Zhou",
        "Fernández",
        "Johnson",
        "Andersson",
        "Bianchi",
        "Castillo",
        "Henderson",
        "Lewandowski",
        "Richardson",
        "Vasquez",
        "Williamson",
        "Kristiansen",
    ],
    place: &[
        "Ashford",
        "Bayview",
        "Brookfield",
        "Cedarville",
        "Clifton",
        "Dover",
        "Eastwood",
        "Fairview",
        "Glenwood",
        "Greenville",
        "Hillcrest",
        "Kingsport",
        "Lakeside",
        "Marlow",
        "Milford",
        "Newport",
        "Oakdale",
        "Riverton",
        "Salem",
        "Springfield",
        "Westbrook",
        "Avon",
        "Bristol",
        "Lyon",
        "Troy",
        "Hudson",
    ],
    street: &[
        "Ash",
        "Aspen",
        "Birch",
        "Bay",
        "Cherry",
        "Chestnut",
        "Dogwood",
        "Elm",
        "Forest",
        "Garden",
        "Harbor",
        "Highland",
        "Juniper",
        "Laurel",
        "Linden",
        "Magnolia",
        "Maple",
        "Meadow",
        "Mill",
        "Oak",
        "Orchard",
        "Pine",
        "Poplar",
        "Ridge",
        "River",
        "Spruce",
        "Sycamore",
        "Valley",
        "Walnut",
        "Willow",
        "Lincoln",
        "Jefferson",
        "Franklin",
        "Riverside",
        "Greenwood",
    ],
};

const CYRILLIC: Lists = Lists {
    given: &[
        "Анна",
        "Борис",
        "Вера",
        "Глеб",
        "Дарья",
        "Егор",
        "Елена",
        "Иван",
        "Ирина",
        "Илья",
        "Кира",
        "Лев",
        "Мария",
        "Нина",
        "Олег",
        "Ольга",
        "Павел",
        "Роман",
        "Сергей",
        "Софья",
        "Юрий",
        "Дмитрий",
        "Татьяна",
        "Александр",
        "Екатерина",
    ],
    family: &[
        "Волков",
        "Зайцев",
        "Иванов",
        "Козлов",
        "Лебедев",
        "Морозов",
        "Новиков",
        "Орлов",
        "Павлова",
        "Петрова",
        "Попов",
        "Соколов",
        "Смирнов",
        "Фролов",
        "Кузнецова",
        "Васильев",
        "Белова",
        "Егоров",
        "Ким",
        "Ли",
        "Тихонова",
        "Григорьев",
    ],
    place: &[
        "Омск",
        "Тверь",
        "Псков",
        "Самара",
        "Казань",
        "Пермь",
        "Томск",
        "Ярославль",
    ],
    street: &[
        "Садовая",
        "Лесная",
        "Речная",
        "Школьная",
        "Мира",
        "Полевая",
        "Луговая",
    ],
};

const GREEK: Lists = Lists {
    given: &[
        "Άννα",
        "Δήμος",
        "Ελένη",
        "Ηλίας",
        "Μαρία",
        "Νίκος",
        "Σοφία",
        "Γιώργος",
        "Κώστας",
        "Ζωή",
        "Αλέξανδρος",
        "Κατερίνα",
        "Παναγιώτης",
    ],
    family: &[
        "Ζερβός",
        "Καλός",
        "Νικολάου",
        "Γεωργίου",
        "Οικονόμου",
        "Παπαδόπουλος",
        "Βλάχος",
        "Αντωνίου",
        "Δημητρίου",
        "Μαυρίδης",
        "Κωνσταντινίδης",
    ],
    place: &["Βόλος", "Πάτρα", "Λάρισα", "Χανιά", "Κοζάνη", "Ιωάννινα"],
    street: &["Ερμού", "Αθηνάς", "Σταδίου", "Πατησίων", "Ακαδημίας"],
};

const ARABIC: Lists = Lists {
    given: &[
        "أحمد",
        "علي",
        "عمر",
        "ليلى",
        "مريم",
        "محمد",
        "نور",
        "سارة",
        "فاطمة",
        "يوسف",
        "خالد",
        "زينب",
        "إبراهيم",
    ],
    family: &[
        "الحسن",
        "خليل",
        "منصور",
        "حداد",
        "سالم",
        "ناصر",
        "العلي",
        "يوسف",
        "عباس",
        "الشامي",
    ],
    place: &["دمشق", "عمان", "بيروت", "حلب", "صيدا", "طنطا"],
    street: &["النور", "الورد", "السلام", "النخيل", "الزيتون"],
};

const HEBREW: Lists = Lists {
    given: &[
        "דוד", "שרה", "יעל", "משה", "רות", "נועה", "אורי", "מיכל", "יוסף", "תמר",
    ],
    family: &[
        "כהן",
        "לוי",
        "מזרחי",
        "פרץ",
        "ביטון",
        "אברהם",
        "פרידמן",
        "שפירא",
    ],
    place: &["חיפה", "נתניה", "אשדוד", "רחובות", "עכו"],
    street: &["הרצל", "הגפן", "הזית", "האלון", "הברוש"],
};

const DEVANAGARI: Lists = Lists {
    given: &[
        "अमित",
        "अनु",
        "राज",
        "सीता",
        "प्रिया",
        "विजय",
        "नेहा",
        "अर्जुन",
        "कविता",
    ],
    family: &["शर्मा", "वर्मा", "गुप्ता", "सिंह", "पटेल", "जोशी", "मेहता"],
    place: &["पुणे", "नागपुर", "इंदौर", "भोपाल", "जयपुर"],
    street: &["गांधी", "नेहरू", "शिवाजी", "तिलक"],
};

const KANA: Lists = Lists {
    given: &[
        "さくら",
        "ひなた",
        "あおい",
        "ゆうと",
        "はると",
        "みさき",
        "ユウキ",
        "ケンジ",
        "アヤカ",
        "ひかり",
        "そうた",
        "めぐみ",
        "ヒロシ",
        "ミユ",
    ],
    family: &[
        "やまだ",
        "すずき",
        "タナカ",
        "サトウ",
        "いとう",
        "ワタナベ",
        "こばやし",
    ],
    place: &["さいたま", "つくば", "いわき", "ひたちなか", "あきるの"],
    street: &["さくら", "みどり", "ひばり", "あおば"],
};

const HAN: Lists = Lists {
    given: &[
        "太郎", "花子", "翔太", "健一", "美咲", "陽菜", "大輔", "直樹", "由美", "恵", "誠", "蓮",
        "伟", "芳", "娜", "强", "静", "明", "秀英", "建国",
    ],
    family: &[
        "山田",
        "佐藤",
        "鈴木",
        "高橋",
        "田中",
        "渡辺",
        "伊藤",
        "中村",
        "小林",
        "加藤",
        "吉田",
        "山本",
        "佐々木",
        "長谷川",
        "王",
        "李",
        "张",
        "刘",
        "陈",
        "杨",
        "黄",
        "周",
    ],
    place: &[
        "横浜", "札幌", "仙台", "千葉", "京都", "神戸", "広島", "福岡", "杭州", "成都",
    ],
    street: &["本町", "中央", "栄町", "桜木", "緑町", "旭町"],
};

const HANGUL: Lists = Lists {
    given: &[
        "민준", "서연", "지호", "하은", "도윤", "서준", "지우", "수아", "예준", "지민", "현우",
    ],
    family: &[
        "김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "남궁",
    ],
    place: &["수원", "대전", "광주", "울산", "춘천", "전주"],
    street: &["중앙로", "세종로", "평화로", "번영로"],
};

pub fn lists(script: Script) -> &'static Lists {
    match script {
        Script::Latin => &LATIN,
        Script::Cyrillic => &CYRILLIC,
        Script::Greek => &GREEK,
        Script::Arabic => &ARABIC,
        Script::Hebrew => &HEBREW,
        Script::Devanagari => &DEVANAGARI,
        Script::Kana => &KANA,
        Script::Han => &HAN,
        Script::Hangul => &HANGUL,
    }
}

pub const ALL_SCRIPTS: [Script; 9] = [
    Script::Latin,
    Script::Cyrillic,
    Script::Greek,
    Script::Arabic,
    Script::Hebrew,
    Script::Devanagari,
    Script::Kana,
    Script::Han,
    Script::Hangul,
];

/// The script of one character, if it is a letter of a script veil has lists for.
pub fn char_script(c: char) -> Option<Script> {
    let u = c as u32;
    Some(match u {
        0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F | 0x1E00..=0x1EFF if c.is_alphabetic() => {
            Script::Latin
        }
        0x370..=0x3FF | 0x1F00..=0x1FFF => Script::Greek,
        0x400..=0x52F => Script::Cyrillic,
        0x590..=0x5FF => Script::Hebrew,
        0x600..=0x6FF | 0x750..=0x77F => Script::Arabic,
        0x900..=0x97F => Script::Devanagari,
        0x3040..=0x30FF => Script::Kana,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF => Script::Han,
        0xAC00..=0xD7A3 | 0x1100..=0x11FF | 0x3130..=0x318F => Script::Hangul,
        _ => return None,
    })
}

/// The script of a word: kana anywhere makes it Japanese; otherwise the first letter decides.
pub fn word_script(word: &str) -> Option<Script> {
    let mut first = None;
    for c in word.chars() {
        match char_script(c) {
            Some(Script::Kana) => return Some(Script::Kana),
            Some(s) if first.is_none() => first = Some(s),
            _ => {}
        }
    }
    first
}

/// Which list a word is replaced from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Given,
    Family,
    Place,
    Street,
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Picks an entry of `list` with the same number of characters as `word` when one exists
/// (else the nearest length), never the word itself, using `seed`. No allocation.
pub fn pick(list: &'static [&'static str], word: &str, seed: u64) -> &'static str {
    const MAX: usize = 128;
    let n = word.chars().count();
    // Distance of each entry's length from the word's; the word itself is not eligible (it can
    // only be an entry of the same length, so the comparison is rarely needed). Entries are
    // short, so their lengths come from their UTF-8 lengths where the script is single-width.
    let mut dist = [usize::MAX; MAX];
    for (d, w) in dist.iter_mut().zip(list.iter()) {
        let c = if w.is_ascii() {
            w.len()
        } else {
            w.chars().count()
        };
        if c != n || !eq_ignore_case(w, word) {
            *d = c.abs_diff(n);
        }
    }
    let used = &dist[..list.len().min(MAX)];
    let best = used.iter().copied().min().unwrap_or(usize::MAX);
    if best == usize::MAX {
        return list[0];
    }
    let count = used.iter().filter(|d| **d == best).count() as u64;
    let k = (seed % count.max(1)) as usize;
    used.iter()
        .zip(list.iter())
        .filter(|(d, _)| **d == best)
        .nth(k)
        .map(|(_, w)| *w)
        .unwrap_or(list[0])
}

/// Appends `replacement` to `out` in the case pattern of `original` (all upper, all lower, or
/// as listed), without an intermediate allocation in the common case.
fn push_matching_case(out: &mut String, original: &str, replacement: &str) {
    let mut letters = original.chars().filter(|c| c.is_alphabetic());
    let first = letters.next();
    let mut more = false;
    let mut all_upper = first.is_some_and(char::is_uppercase);
    for c in letters {
        more = true;
        all_upper &= c.is_uppercase();
    }
    if more && all_upper {
        out.extend(replacement.chars().flat_map(char::to_uppercase));
    } else if first.is_some_and(char::is_lowercase) {
        out.extend(replacement.chars().flat_map(char::to_lowercase));
    } else {
        out.push_str(replacement);
    }
}

/// Street-address words that carry no identity and are kept as they are.
const ADDRESS_KEEP: &[&str] = &[
    "st",
    "st.",
    "street",
    "ave",
    "ave.",
    "avenue",
    "rd",
    "rd.",
    "road",
    "blvd",
    "boulevard",
    "dr",
    "drive",
    "ln",
    "lane",
    "ct",
    "court",
    "pl",
    "place",
    "way",
    "hwy",
    "highway",
    "apt",
    "apt.",
    "suite",
    "ste",
    "unit",
    "floor",
    "fl",
    "n",
    "s",
    "e",
    "w",
    "ne",
    "nw",
    "se",
    "sw",
    "north",
    "south",
    "east",
    "west",
    "po",
    "box",
    "#",
];

/// Replaces each word of `value` from the lists of its script. `part` chooses the list; for
/// person names (`Given` with `family_last`), the last word of a Latin-like name and the first
/// word of a CJK name come from the family list. `next` supplies one seed per word; characters
/// outside known scripts (digits, emoji, marks) are left to `other`, which the caller makes a
/// keyed shape-preserving substitution.
pub fn replace_words(
    value: &str,
    part: Part,
    person: bool,
    next: &mut dyn FnMut() -> u64,
    other: &mut dyn FnMut(&str) -> String,
) -> String {
    // Split into words (letters and combining marks) and separators.
    let mut pieces: Vec<(bool, &str)> = Vec::new();
    let mut start = 0;
    let mut in_word = None;
    for (i, c) in value.char_indices() {
        let is_word = c.is_alphabetic() || is_mark(c) || c == '\'';
        match in_word {
            None => in_word = Some(is_word),
            Some(w) if w != is_word => {
                pieces.push((w, &value[start..i]));
                start = i;
                in_word = Some(is_word);
            }
            _ => {}
        }
    }
    if let Some(w) = in_word {
        pieces.push((w, &value[start..]));
    }
    let word_count = pieces.iter().filter(|(w, _)| *w).count();
    let mut word_index = 0;
    let mut out = String::with_capacity(value.len() + 8);
    for (is_word, piece) in pieces {
        if !is_word {
            out.push_str(&other(piece));
            continue;
        }
        let idx = word_index;
        word_index += 1;
        let Some(script) = word_script(piece) else {
            out.push_str(&other(piece));
            continue;
        };
        if part == Part::Street && ADDRESS_KEEP.contains(&piece.to_lowercase().as_str()) {
            out.push_str(piece);
            continue;
        }
        let l = lists(script);
        let cjk_order = matches!(script, Script::Han | Script::Hangul | Script::Kana);
        let list = match part {
            Part::Given | Part::Family if person && word_count > 1 => {
                let family_here = if cjk_order {
                    idx == 0
                } else {
                    idx + 1 == word_count
                };
                if family_here { l.family } else { l.given }
            }
            Part::Given => l.given,
            Part::Family => l.family,
            Part::Place => l.place,
            Part::Street => l.street,
        };
        push_matching_case(&mut out, piece, pick(list, piece, next()));
    }
    out
}

fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x300..=0x36F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F | 0x3099..=0x309A)
}

/// Every given and family name of the lists, lower-cased (for the scanner's name detector).
static KNOWN_NAMES: std::sync::LazyLock<std::collections::HashSet<String>> =
    std::sync::LazyLock::new(|| {
        ALL_SCRIPTS
            .iter()
            .flat_map(|s| lists(*s).given.iter().chain(lists(*s).family.iter()))
            .map(|n| n.to_lowercase())
            .collect()
    });

/// True when `word` (compared case-insensitively for cased scripts) is in a given- or
/// family-name list.
pub fn is_known_name(word: &str) -> bool {
    word_script(word).is_some() && KNOWN_NAMES.contains(&word.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: &str, part: Part, person: bool) -> String {
        let mut s = 12345u64;
        replace_words(
            value,
            part,
            person,
            &mut || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                s >> 11
            },
            &mut |p| p.to_owned(),
        )
    }

    #[test]
    fn keeps_script_and_rough_length() {
        let j = run("山田 太郎", Part::Given, true);
        assert!(
            j.chars()
                .all(|c| c == ' ' || char_script(c) == Some(Script::Han)),
            "{j}"
        );
        let family = j.split(' ').next().unwrap();
        assert!(HAN.family.contains(&family), "{j}");
        let k = run("さくら", Part::Given, true);
        assert!(
            k.chars().all(|c| char_script(c) == Some(Script::Kana)),
            "{k}"
        );
        let r = run("Иван Петров", Part::Given, true);
        assert!(
            r.chars()
                .all(|c| c == ' ' || char_script(c) == Some(Script::Cyrillic))
        );
        let a = run("محمد", Part::Given, false);
        assert!(
            a.chars().all(|c| char_script(c) == Some(Script::Arabic)),
            "{a}"
        );
        assert_eq!(run("", Part::Given, true), "");
        let l = run("Mary O'Brien-Smith", Part::Given, true);
        assert!(l.contains('-'), "{l}");
        assert_eq!(
            run("SMITH", Part::Family, false),
            run("SMITH", Part::Family, false)
        );
        assert!(
            run("SMITH", Part::Family, false)
                .chars()
                .all(|c| !c.is_lowercase())
        );
        // Emoji and digits go to the caller's substitution (identity here).
        assert!(run("Zoë 😀", Part::Given, false).ends_with(" 😀"));
    }

    #[test]
    fn street_suffixes_kept() {
        let s = run("123 Maple St", Part::Street, false);
        assert!(s.starts_with("123 ") && s.ends_with(" St"), "{s}");
        assert!(!s.contains("Maple"), "{s}");
    }

    #[test]
    fn lists_fit_the_picker() {
        for s in ALL_SCRIPTS {
            let l = lists(s);
            for list in [l.given, l.family, l.place, l.street] {
                assert!(list.len() >= 4 && list.len() <= 128, "{s:?}");
            }
        }
    }

    #[test]
    fn known_names() {
        assert!(is_known_name("García"));
        assert!(is_known_name("山田"));
        assert!(!is_known_name("improvement"));
    }
}
