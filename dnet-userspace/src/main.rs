fn main() {
    let mut ebpf = aya::Ebpf::load(dnet::datapath::OBJECT).unwrap();
    for (name, p) in ebpf.programs_mut() {
        println!("{name}");
        let p: &mut aya::programs::SchedClassifier = p.try_into().unwrap();
        p.load().unwrap();
    }
}
