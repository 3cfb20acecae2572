//! Reads the text printed by `print::print_graph` back into a graph, so that any pass
//! can be tested from a text input. Shapes are re-inferred and must equal the printed
//! ones (inputs take theirs from the text); ids must be dense and in order. Lines that
//! are blank or start with `#` are ignored, as is anything after `#` on the header.

use super::graph::{Graph, NodeId};
use super::op::Op;
use super::ops::{parse_dims, AttrText, Attrs};
use super::{ir_bail, IrError, IrResult};

pub fn parse_graph(text: &str) -> IrResult<Graph> {
    let mut graph: Option<Graph> = None;
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: IrError| IrError::new(format!("line {}: {}", lineno + 1, e.message));
        if let Some(rest) = line.strip_prefix("graph ") {
            if graph.is_some() {
                return Err(at(IrError::new("a second `graph` header")));
            }
            let name = rest.split('#').next().unwrap_or("").trim();
            graph = Some(Graph::new(name));
            continue;
        }
        let Some(g) = graph.as_mut() else {
            return Err(at(IrError::new("expected `graph NAME` first")));
        };
        parse_line(g, line).map_err(at)?;
    }
    match graph {
        Some(g) => Ok(g),
        None => ir_bail!("empty graph text: expected `graph NAME`"),
    }
}

fn parse_line(g: &mut Graph, line: &str) -> IrResult<()> {
    let mut s = Scanner {
        chars: line.chars().collect(),
        pos: 0,
    };
    if s.eat_word("output") {
        let name = s.string()?;
        s.expect('=')?;
        let id = s.node_ref()?;
        s.end()?;
        if id.index() >= g.len() {
            ir_bail!("output refers to missing node {id}");
        }
        return g.set_output(&name, id);
    }
    let id = s.node_ref()?;
    s.expect(':')?;
    let shape = parse_dims(&s.list()?)?;
    s.expect('=')?;
    let mnemonic = s.word()?;
    let mut attrs = Attrs::default();
    let mut args = Vec::new();
    loop {
        s.skip_ws();
        match s.peek() {
            None => break,
            Some('%') => {
                args.push(s.node_ref()?);
                s.skip_ws();
                if s.peek() == Some(',') {
                    s.pos += 1;
                } else {
                    s.end()?;
                    break;
                }
            }
            Some(_) if args.is_empty() => {
                let key = s.word()?;
                s.expect('=')?;
                s.skip_ws();
                let value = match s.peek() {
                    Some('"') => AttrText::Str(s.string()?),
                    Some('[') => AttrText::List(s.list()?),
                    _ => AttrText::Bare(s.bare()?),
                };
                attrs.pairs.push((key, value));
            }
            Some(c) => ir_bail!("unexpected `{c}` after the operands"),
        }
    }
    g.expect_next(id.0)?;
    let op = Op::from_text(&mnemonic, &attrs)?;
    let got = match op {
        Op::Input { name } => {
            if !args.is_empty() {
                ir_bail!("`input` takes no operands");
            }
            g.input(&name, shape.clone())?
        }
        op => {
            for a in &args {
                if a.index() >= g.len() {
                    ir_bail!("operand {a} is not defined before {id}");
                }
            }
            let before = g.len();
            let got = g.push(op, &args)?;
            if g.len() == before {
                ir_bail!("{id} repeats node {got} (the graph must be hash-consed)");
            }
            got
        }
    };
    if *g.shape(got) != shape {
        ir_bail!(
            "{id} is written as {shape} but its op gives {}",
            g.shape(got)
        );
    }
    Ok(())
}

struct Scanner {
    chars: Vec<char>,
    pos: usize,
}

impl Scanner {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char) -> IrResult<()> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            ir_bail!("expected `{c}` at column {}", self.pos + 1)
        }
    }

    fn end(&mut self) -> IrResult<()> {
        self.skip_ws();
        match self.peek() {
            None => Ok(()),
            Some(c) => ir_bail!("unexpected `{c}` at column {}", self.pos + 1),
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn word(&mut self) -> IrResult<String> {
        self.skip_ws();
        let w = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if w.is_empty() {
            ir_bail!("expected a name at column {}", self.pos + 1);
        }
        Ok(w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let save = self.pos;
        match self.word() {
            Ok(found) if found == w => true,
            _ => {
                self.pos = save;
                false
            }
        }
    }

    fn bare(&mut self) -> IrResult<String> {
        self.skip_ws();
        let w = self.take_while(|c| c.is_ascii_alphanumeric() || "+-._".contains(c));
        if w.is_empty() {
            ir_bail!("expected a value at column {}", self.pos + 1);
        }
        Ok(w)
    }

    fn node_ref(&mut self) -> IrResult<NodeId> {
        self.expect('%')?;
        let digits = self.take_while(|c| c.is_ascii_digit());
        match digits.parse::<u32>() {
            Ok(n) => Ok(NodeId(n)),
            Err(_) => ir_bail!("expected a node number after `%`"),
        }
    }

    /// `[a, b, ..]` as item texts.
    fn list(&mut self) -> IrResult<Vec<String>> {
        self.expect('[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(self.bare()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => ir_bail!("expected `,` or `]` at column {}", self.pos + 1),
            }
        }
    }

    fn string(&mut self) -> IrResult<String> {
        self.expect('"')?;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => ir_bail!("unterminated string"),
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some('n') => s.push('\n'),
                        Some(c @ ('"' | '\\')) => s.push(c),
                        _ => ir_bail!("bad escape in string"),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}
